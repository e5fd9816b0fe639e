"""Run the Tools family's scripted expert (and the random baseline) and print success rates.

    python examples/tools_expert.py                        # 20 test-split seeds per difficulty
    python examples/tools_expert.py --env creditgym/ToolsPython-v0 --seeds 200

The expert reads only the raw observations (as any policy would through `Context.obs_texts`), runs
the reference plan with the env's tools (calculator, sandboxed python, files, key-value store) and
answers from the last tool result.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium
import numpy as np
import tyro

import creditgym  # noqa: F401  (registers the creditgym/ env ids)
from creditgym.agents.scripted import play_episodes
from creditgym.envs.tools import TOOLS
from creditgym.registry import scripted_functions


def success_rate(env_id: str, which: str, difficulty: int, seeds: int, split: str = "test") -> tuple[float, float]:
    """(success rate, mean tool calls) of the expert or random policy over `seeds` seeds."""
    expert, random = scripted_functions(env_id)
    env = gymnasium.make(env_id, split=split, difficulty=difficulty)
    results = play_episodes(env, expert if which == "expert" else random, range(seeds), rng=np.random.default_rng(0))
    env.close()
    return (sum(r.success for r in results) / seeds, sum(r.components["n_calls"] for r in results) / seeds)


@dataclass
class Args:
    env: str = TOOLS
    seeds: int = 20
    split: str = "test"


def main() -> None:
    args = tyro.cli(Args, description=__doc__.splitlines()[0])
    for difficulty in (1, 2, 3):
        for which in ("expert", "random"):
            rate, calls = success_rate(args.env, which, difficulty, args.seeds, args.split)
            print(f"{args.env} {args.split} difficulty={difficulty} {which:>6}: success {rate:.3f} "
                  f"(mean tool calls {calls:.2f}, {args.seeds} seeds)")


if __name__ == "__main__":
    main()
