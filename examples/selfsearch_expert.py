"""Run the scripted policies of the self-search family and print success.

SimSearch-v0 (ZeroSearch-style simulated search, at noise p = 0 and p = 0.5) uses the search expert,
which searches again when the documents disagree; inline SelfSearch-v0 (SSRL) uses the privileged
oracle writer, which writes its own search results from the public knowledge world.

    python examples/selfsearch_expert.py        # 50 test-split seeds per setting
"""

from __future__ import annotations

import sys

import creditgym  # noqa: F401  (registers the creditgym/ ids)
from creditgym.agents.scripted import success_rate
from creditgym.envs.selfsearch import SELFSEARCH, SIMSEARCH


def main(n: int = 50) -> None:
    seeds = range(n)
    for p in (0.0, 0.5):
        e = success_rate(SIMSEARCH, "expert", seeds, options={"noise_prob": p})
        r = success_rate(SIMSEARCH, "random", seeds, options={"noise_prob": p})
        print(f"SimSearch-v0 noise p={p:.1f}   expert {e:.3f}   random {r:.3f}   ({n} test seeds)")
    e, r = success_rate(SELFSEARCH, "expert", seeds), success_rate(SELFSEARCH, "random", seeds)
    print(f"SelfSearch-v0 inline        oracle {e:.3f}   random {r:.3f}   ({n} test seeds)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
