"""Red team: attacker-vs-victim dialogues on the harmless canary proxy (ENVS.md section 6).

`REDTEAM` (attacker), `REDTEAM_DEFENDER` (defender) and `REDTEAM_SELFPLAY` (two players), registered
below with their scripted experts. The library ships no harmful goals, prompts or rubrics: the
secret is a random canary code and the rules are benign house rules; user goal files are only read
from a path.
"""

from creditgym.registry import register

from .backends import ChatEndpoint, Goal, Opponent, OpponentPool, load_goals, named_opponent
from .env import RedTeamEnv
from .expert import (
    attacker_expert,
    attacker_random,
    defender_expert,
    defender_random,
    selfplay_expert,
    selfplay_random,
)
from .game import GameTask, build_game, encode, generate_task, task_from_id
from .judges import (
    CanaryJudge,
    ida_score,
    is_helpful,
    is_refusal,
    judge_rules,
    open_loop_format,
    open_loop_reward,
    split_plan,
)
from .novelty import novelty_bonus
from .selfplay import RedTeamSelfPlayEnv
from .victim import ScriptedVictim, classify

__all__ = [
    "REDTEAM",
    "REDTEAM_DEFENDER",
    "REDTEAM_SELFPLAY",
    "attacker_expert",
    "attacker_random",
    "defender_expert",
    "defender_random",
    "selfplay_expert",
    "selfplay_random",
    "CanaryJudge",
    "ChatEndpoint",
    "GameTask",
    "Goal",
    "Opponent",
    "OpponentPool",
    "RedTeamEnv",
    "RedTeamSelfPlayEnv",
    "ScriptedVictim",
    "build_game",
    "classify",
    "encode",
    "generate_task",
    "ida_score",
    "is_helpful",
    "is_refusal",
    "judge_rules",
    "load_goals",
    "named_opponent",
    "novelty_bonus",
    "open_loop_format",
    "open_loop_reward",
    "split_plan",
    "task_from_id",
]

REDTEAM = "creditgym/RedTeam-v0"
REDTEAM_DEFENDER = "creditgym/RedTeamDefender-v0"
REDTEAM_SELFPLAY = "creditgym/RedTeamSelfPlay-v0"

register(REDTEAM, "creditgym.envs.redteam:RedTeamEnv", {"role": "attacker"}, "attacker vs a scripted victim guarding a canary",
         expert=attacker_expert, random=attacker_random)
register(REDTEAM_DEFENDER, "creditgym.envs.redteam:RedTeamEnv", {"role": "defender", "benign_prob": 0.5, "attacker": "scripted"},
         "defender vs a scripted attacker, half benign users", expert=defender_expert, random=defender_random)
# the self-play expert plays whichever role `history.role` names
register(REDTEAM_SELFPLAY, "creditgym.envs.redteam:RedTeamSelfPlayEnv", {"benign_prob": 0.0},
         "two-player attacker vs defender self-play", expert=selfplay_expert, random=selfplay_random)
