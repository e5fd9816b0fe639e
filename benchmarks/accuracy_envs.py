"""A chain env whose advantages are known in closed form: the accuracy benchmark's sanity check.

`bench/Chain-v0`: `length` turns; each turn the agent says `g` (good) or `b` (bad); the episode
ends after `length` turns with reward 1 when every action was good, else 0. Its scripted expert
always says `g` and its random action is `g` or `b` with equal odds, so at action noise epsilon the
policy is good with probability p = 1 - epsilon / 2, independently per turn. Then, with undiscounted
returns (docs/accuracy.md):

    V(s_k) = [a_0..a_{k-1} all good] * p^(N-k)
    A*_k   = V(s_{k+1}) - V(s_k) = [prefix good] * ([a_k good] * p^(N-k-1) - p^(N-k))

    creditgym bench accuracy creditgym.benchmarks.accuracy_envs:bench/Chain-v0 --epsilon 0.8
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import creditgym
from creditgym.agents import register_scripted
from creditgym.agents.base import Context
from creditgym.envs import Invalid, Outcome, Parsed, Task, TextEnv

__all__ = ["ENV_ID", "ChainEnv", "chain_advantages", "chain_values"]

ENV_ID = "bench/Chain-v0"


class ChainEnv(TextEnv):
    """Say `g` or `b` `length` times; reward 1 at the end when every answer was `g`."""

    metadata = {**TextEnv.metadata, "obs_role": "user", "stop": ()}

    def __init__(self, length: int = 3, **kw: Any):
        super().__init__(max_turns=length, **kw)
        self.length = int(length)
        self.good: list[bool] = []

    def _new_task(self, rng: np.random.Generator, options: Mapping[str, Any]) -> Task:
        # The game is the same for every task; the seed picks a tagged copy, so different seeds are
        # different tasks (gymnasium's and creditgym's checkers ask that of every env).
        prefix = f"chain/train/{self.length}."
        task_id = options.get("task_id")
        if task_id is None:
            return Task(f"{prefix}{int(rng.integers(0, 2**16)):04x}", "train")
        if not str(task_id).startswith(prefix):
            raise ValueError(f"bad chain task id {task_id!r}: expected {prefix}<4 hex digits>")
        return Task(str(task_id), "train")

    def _first_obs(self) -> str:
        return f"Say g or b, {self.length} times, one per turn. Only all g wins."

    def _parse(self, action: str) -> Parsed | Invalid:
        word = action.strip()
        if word not in ("g", "b"):
            return Invalid("Invalid action: say g or b.")
        return Parsed(word, {}, action)

    def _apply(self, parsed: Parsed) -> Outcome:
        self.good.append(parsed.kind == "g")
        done = len(self.good) >= self.length
        return Outcome(f"turn {len(self.good)} done", reward=float(done and all(self.good)), terminated=done)

    def _state_key(self) -> str:
        return "".join("g" if x else "b" for x in self.good) or "start"

    def _final_components(self) -> dict[str, float]:
        return {"success": float(len(self.good) == self.length and all(self.good))}

    def _valid_actions(self) -> list[str]:
        return ["g", "b"]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        self.good = []
        return super().reset(seed=seed, options=options)


def chain_values(good: Sequence[bool], p: float) -> list[float]:
    """V(s_k) for k = 0..N (N = len(good); V(s_N) = 0 after the end) under good-probability p."""
    n = len(good)
    values = []
    for k in range(n):
        values.append(float(all(good[:k])) * p ** (n - k))
    return [*values, 0.0]


def chain_advantages(good: Sequence[bool], p: float) -> list[float]:
    """A*_k = r_k + V(s_{k+1}) - V(s_k) for one episode's actions (`good[k]`: turn k said `g`)."""
    n, v = len(good), chain_values(good, p)
    r = [float(k == n - 1 and all(good)) for k in range(n)]
    return [r[k] + v[k + 1] - v[k] for k in range(n)]


def _expert(ctx: Context, rng: np.random.Generator) -> str:
    return "g"


def _random(ctx: Context, rng: np.random.Generator) -> str:
    return "g" if rng.random() < 0.5 else "b"


creditgym.register(ENV_ID, ChainEnv, description="closed-form chain for the accuracy benchmark (docs/accuracy.md)")
register_scripted(ENV_ID, expert=_expert, random=_random)
