"""Run the scripted search expert (and the random baseline) on Search-v0 and print success.

    python examples/search_expert.py            # 50 test-split seeds per env
    python examples/search_expert.py 200 -v     # 200 seeds, and print one episode
"""

from __future__ import annotations

import sys

import gymnasium
import numpy as np

import creditgym  # noqa: F401  (registers the creditgym/ ids)
from creditgym.agents.base import Context
from creditgym.agents.scripted import scripted_functions


def play(env: gymnasium.Env, env_id: str, seed: int, which: int) -> tuple[float, Context]:
    fn = scripted_functions(env_id)[which]
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    ctx = Context(obs_texts=[obs])
    while True:
        action = fn(ctx, rng)
        obs, reward, terminated, truncated, info = env.step(action)
        ctx.action_texts.append(action)
        ctx.obs_texts.append(obs)
        if terminated or truncated:
            return info["reward_components"]["success"], ctx


def main(n: int = 50, verbose: bool = False) -> None:
    for env_id in ("creditgym/SearchEasy-v0", "creditgym/Search-v0"):
        env = gymnasium.make(env_id, split="test")
        expert = np.mean([play(env, env_id, s, 0)[0] for s in range(n)])
        rand = np.mean([play(env, env_id, s, 1)[0] for s in range(n)])
        print(f"{env_id:28s} expert success {expert:.3f}   random success {rand:.3f}   ({n} test seeds)")
    if verbose:
        _, ctx = play(gymnasium.make("creditgym/Search-v0", split="test"), "creditgym/Search-v0", 0, 0)
        print(ctx.obs_texts[0])
        for action, obs in zip(ctx.action_texts, ctx.obs_texts[1:]):
            print(action + obs)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "-v"]
    main(int(args[0]) if args else 50, "-v" in sys.argv)
