"""Red team: attacker-vs-victim dialogues on the harmless canary proxy (ENVS.md section 6).

`creditgym/RedTeam-v0` (attacker), `creditgym/RedTeamDefender-v0` (defender) and
`creditgym/RedTeamSelfPlay-v0` (two players). The library ships no harmful goals, prompts or
rubrics: the secret is a random canary code and the rules are benign house rules; user goal files are
only read from a path.
"""

from .backends import ChatEndpoint, Goal, Opponent, OpponentPool, load_goals, named_opponent
from .env import RedTeamEnv
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
