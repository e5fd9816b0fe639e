"""Run the scripted policies of the self-search family and print success.

SimSearch-v0 (ZeroSearch-style simulated search, at noise p = 0 and p = 0.5) uses the search expert,
which searches again when the documents disagree; inline SelfSearch-v0 (SSRL) uses the privileged
oracle writer, which writes its own search results from the public knowledge world.

    python examples/selfsearch_expert.py              # 50 test-split seeds per setting
    python examples/selfsearch_expert.py --seeds 200
"""

from __future__ import annotations

import tyro

import creditgym  # noqa: F401  (registers the creditgym/ ids)
from creditgym.agents.scripted import success_rate
from creditgym.envs.selfsearch import SELFSEARCH, SIMSEARCH


def main(seeds: int = 50) -> None:
    """Expert (or oracle) and random success over `seeds` test seeds per setting."""
    for p in (0.0, 0.5):
        e = success_rate(SIMSEARCH, "expert", range(seeds), options={"noise_prob": p})
        r = success_rate(SIMSEARCH, "random", range(seeds), options={"noise_prob": p})
        print(f"SimSearch-v0 noise p={p:.1f}   expert {e:.3f}   random {r:.3f}   ({seeds} test seeds)")
    e, r = success_rate(SELFSEARCH, "expert", range(seeds)), success_rate(SELFSEARCH, "random", range(seeds))
    print(f"SelfSearch-v0 inline        oracle {e:.3f}   random {r:.3f}   ({seeds} test seeds)")

if __name__ == "__main__":
    tyro.cli(main)
