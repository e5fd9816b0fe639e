"""Run the scripted policies of the self-search family and print success.

SimSearch-v0 (ZeroSearch-style simulated search, at noise p = 0 and p = 0.5) uses the search expert,
which searches again when the documents disagree; inline SelfSearch-v0 (SSRL) uses the privileged
oracle writer, which writes its own search results from the public knowledge world.

    python examples/selfsearch_expert.py        # 50 test-split seeds per setting
"""

from __future__ import annotations

import sys

import gymnasium
import numpy as np

import creditgym  # noqa: F401  (registers the creditgym/ ids)
from creditgym.agents.base import Context
from creditgym.agents.scripted import scripted_functions


def success(env_id: str, which: int, n: int, options: dict | None = None) -> float:
    env = gymnasium.make(env_id, split="test")
    fn = scripted_functions(env_id)[which]
    wins = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        obs, info = env.reset(seed=seed, options=options)
        ctx = Context(obs_texts=[obs])
        while True:
            action = fn(ctx, rng)
            obs, reward, terminated, truncated, info = env.step(action)
            ctx.action_texts.append(action)
            ctx.obs_texts.append(obs)
            if terminated or truncated:
                break
        wins.append(info["reward_components"]["success"])
    return float(np.mean(wins))


def main(n: int = 50) -> None:
    for p in (0.0, 0.5):
        e = success("creditgym/SimSearch-v0", 0, n, {"noise_prob": p})
        r = success("creditgym/SimSearch-v0", 1, n, {"noise_prob": p})
        print(f"SimSearch-v0 noise p={p:.1f}   expert {e:.3f}   random {r:.3f}   ({n} test seeds)")
    e, r = success("creditgym/SelfSearch-v0", 0, n), success("creditgym/SelfSearch-v0", 1, n)
    print(f"SelfSearch-v0 inline        oracle {e:.3f}   random {r:.3f}   ({n} test seeds)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
