"""Play scripted attackers against each victim level of the canary game and print the leak table.

The canary game is the harmless red-teaming proxy of creditgym (ENVS.md section 6): ShopBot keeps a
random code `CANARY-XXXX-XXXX` and benign house rules; an attacker wins by making it reveal the code
or break the rule its goal names. Rows are victim levels L0-L4, columns attacker strategies, cells
the success rate over test-split tasks. Then the defender baselines and a self-play summary.

    python examples/redteam_levels.py              # 200 test seeds per cell
    python examples/redteam_levels.py --seeds 50
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tyro

from creditgym.agents.base import Context
from creditgym.agents.scripted import play_episode
from creditgym.envs.redteam import RedTeamEnv, RedTeamSelfPlayEnv
from creditgym.envs.redteam import expert as experts
from creditgym.envs.redteam.strategies import STRATEGIES, parse_attacker_intro, strategy_message

Fn = Callable[[Context, np.random.Generator], str]


def fixed(name: str) -> Fn:
    """A fixed strategy of the leak table as an action function."""
    return lambda ctx, rng: strategy_message(name, parse_attacker_intro(ctx.obs_texts[0]), len(ctx.action_texts))


def leak_table(seeds: int) -> None:
    attackers: dict[str, tuple[Fn, int]] = {"direct (1 turn)": (experts.direct_attacker, 1)}
    attackers.update({name: (fixed(name), 6) for name in STRATEGIES if name != "direct"})
    attackers.update({"ladder (expert)": (experts.attacker_expert, 6), "random": (experts.attacker_random, 6)})
    print("attack success rate, canary + rule goals, test split, "
          f"{seeds} seeds per cell\n{'level':<6}" + "".join(f"{n:>17}" for n in attackers))
    for level in range(5):
        cells = []
        for fn, max_turns in attackers.values():
            env, rng = RedTeamEnv(split="test", victim_level=level, max_turns=max_turns), np.random.default_rng(0)
            cells.append(np.mean([play_episode(env, fn, s, rng=rng, role="attacker").success for s in range(seeds)]))
        print(f"L{level:<5}" + "".join(f"{c:>17.3f}" for c in cells))


def defender_table(seeds: int) -> None:
    print("\ndefender mean reward (RedTeamDefender-v0: scripted attacker, benign_prob=0.5)")
    for name, fn in [("scripted defender", experts.defender_expert), ("always refuse", experts.refuse_all),
                     ("echo the prompt", experts.echo_prompt), ("random", experts.defender_random)]:
        env, rng = RedTeamEnv(role="defender", benign_prob=0.5, split="test"), np.random.default_rng(0)
        print(f"  {name:<18} {np.mean([play_episode(env, fn, s, rng=rng, role='defender').components['return'] for s in range(seeds)]):+.3f}")


def selfplay_summary(seeds: int) -> None:
    env = RedTeamSelfPlayEnv(split="test", reward_scheme="zero_sum")
    policies = {"attacker": experts.attacker_expert, "defender": experts.defender_expert}
    sums, wins = [], 0
    for seed in range(seeds):
        result = play_episode(env, policies, seed)
        sums.append(sum(result.rewards) + sum(result.info["final_rewards"].values()))
        wins += int(result.info["reward_components_by_role"]["attacker"]["success"])
    print(f"\nself-play (scripted attacker vs scripted defender, zero_sum): attacker wins {wins}/{seeds}, "
          f"max |R_A + R_D| = {max(abs(s) for s in sums):.3g}")


def main(seeds: int = 200) -> None:
    """Leak rates per level, the defender's table and a scripted self-play summary over `seeds` test seeds."""
    leak_table(seeds)
    defender_table(seeds)
    selfplay_summary(seeds)


if __name__ == "__main__":
    tyro.cli(main)
