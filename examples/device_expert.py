"""Play the Device family's scripted expert and random baseline; print success per difficulty.

    python examples/device_expert.py                 # 50 test-split seeds per difficulty
    python examples/device_expert.py --seeds 200 --show 1   # and print one expert episode
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import gymnasium
import numpy as np
import tyro

import creditgym  # noqa: F401  (registers the envs)
from creditgym.agents.scripted import play_episode
from creditgym.envs.device import DEVICE, device_expert, device_random


def play(env: gymnasium.Env, fn, seed: int, show: bool = False) -> dict[str, float]:
    """One episode of `fn` on `env` from `seed`; returns its reward components."""
    res = play_episode(env, fn, seed)
    if show:
        print(res.ctx.obs_texts[0])
        for action, obs in zip(res.ctx.action_texts, res.ctx.obs_texts[1:]):
            print(f"\n>>> {action}\n{obs}")
    return res.components


@dataclass
class Args:
    seeds: int = 50
    split: str = "test"
    show: int = 0
    """print this many expert episodes in full"""


def main() -> None:
    args = tyro.cli(Args, description=__doc__.splitlines()[0])
    for difficulty in (1, 2, 3):
        env = gymnasium.make(DEVICE, split=args.split, difficulty=difficulty)
        for name, fn in (("expert", device_expert), ("random", device_random)):
            comps = [play(env, fn, s, show=(name == "expert" and s < args.show)) for s in range(args.seeds)]
            rate = float(np.mean([c["success"] for c in comps]))
            steps = float(np.mean([c["n_steps"] for c in comps]))
            collateral = Counter(int(c["collateral"]) for c in comps)[1]
            print(f"difficulty {difficulty} {name:6s} success {rate:.3f}  mean steps {steps:.1f}  collateral {collateral}/{args.seeds}")


if __name__ == "__main__":
    main()
