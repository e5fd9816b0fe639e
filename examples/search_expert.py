"""Run the scripted search expert (and the random baseline) on Search-v0 and print success.

    python examples/search_expert.py                       # 50 test-split seeds per env
    python examples/search_expert.py --seeds 200 --verbose   # 200 seeds, and print one episode
"""

from __future__ import annotations

import gymnasium
import tyro

import creditgym  # noqa: F401  (registers the creditgym/ ids)
from creditgym.agents.scripted import play_episode, success_rate
from creditgym.envs.search import SEARCH, SEARCH_EASY
from creditgym.registry import scripted_functions


def main(seeds: int = 50, verbose: bool = False) -> None:
    """Expert and random success over `seeds` test seeds per env; `verbose` prints one expert episode."""
    for env_id in (SEARCH_EASY, SEARCH):
        expert = success_rate(env_id, "expert", range(seeds))
        rand = success_rate(env_id, "random", range(seeds))
        print(f"{env_id:28s} expert success {expert:.3f}   random success {rand:.3f}   ({seeds} test seeds)")
    if verbose:
        env_id = SEARCH
        ctx = play_episode(gymnasium.make(env_id, split="test"), scripted_functions(env_id)[0], 0).ctx
        print(ctx.obs_texts[0])
        for action, obs in zip(ctx.action_texts, ctx.obs_texts[1:]):
            print(action + obs)


if __name__ == "__main__":
    tyro.cli(main)
