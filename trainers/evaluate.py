"""Held-out evaluation: success and reward on test-split seeds, overall and per category.

The same `(env_id, split, n_eval, seed)` always plays the same tasks (the Collector derives each
group's seed from `seed`), so before/after comparisons are paired.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from creditgym.trainers.sft import episode_success
from creditgym.trajectory import Episode, TaskSpec

__all__ = ["EvalResult", "evaluate", "format_table"]


@dataclass(frozen=True)
class EvalResult:
    """`success` / `reward` are means over `n` episodes; `by_category` holds the same per category."""

    success: float
    reward: float
    n: int
    split: str
    by_category: dict[str, dict[str, float]] = field(default_factory=dict)
    episodes: tuple[Episode, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "reward": self.reward, "n": self.n, "split": self.split,
                "by_category": self.by_category}  # fmt: skip


def _stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else 0.0


def evaluate(
    policy: Any,
    env_id: str,
    n_eval: int = 64,
    seed: int = 10_000,
    split: str = "test",
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    env_kwargs: Mapping[str, Any] | None = None,
    categories: Mapping[str, Mapping[str, Any]] | None = None,
    max_context_tokens: int = 2048,
) -> EvalResult:
    """Play `n_eval` episodes per category (one per test-split seed) and report success and reward.

    `categories` maps a label (e.g. a difficulty) to the env kwargs that select it; None plays the
    env as configured under the label "all". `temperature=0` evaluates greedily.
    """
    from creditgym.agents.base import Sampling
    from creditgym.agents.rollout import Collector

    kwargs = {**dict(env_kwargs or {}), "split": split}
    cats: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (categories or {"all": {}}).items()}
    col = Collector(
        policy, env_id, group_size=1, env_kwargs=kwargs,
        sampling=Sampling(temperature=temperature, max_new_tokens=max_new_tokens),
        max_context_tokens=max_context_tokens,
    )  # fmt: skip
    try:
        episodes: list[Episode] = []
        by_cat: dict[str, dict[str, float]] = {}
        for name, cat_kwargs in cats.items():
            tasks = [TaskSpec(name, cat_kwargs) for _ in range(n_eval)]
            eps = col.collect(num_groups=n_eval, seed=seed, tasks=tasks)
            episodes += eps
            s = sum(episode_success(e) for e in eps) / max(len(eps), 1)
            r = sum(e.total_reward for e in eps) / max(len(eps), 1)
            by_cat[name] = {"success": s, "reward": r, "n": float(len(eps)), "stderr": _stderr(s, len(eps))}
    finally:
        col.close()
    n = len(episodes)
    return EvalResult(
        success=sum(episode_success(e) for e in episodes) / max(n, 1),
        reward=sum(e.total_reward for e in episodes) / max(n, 1),
        n=n,
        split=split,
        by_category=by_cat,
        episodes=tuple(episodes),
    )


def format_table(rows: Sequence[tuple[str, EvalResult]], title: str = "held-out evaluation") -> Any:
    """A rich Table: one row per (label, result) and category, with success, its stderr and reward."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("run", "category", "split", "n", "success", "± stderr", "reward"):
        table.add_column(col, justify="right" if col not in ("run", "category", "split") else "left")
    for label, res in rows:
        for cat, m in res.by_category.items():
            table.add_row(label, cat, res.split, str(int(m["n"])), f"{m['success']:.3f}", f"{m['stderr']:.3f}", f"{m['reward']:.3f}")
    return table
