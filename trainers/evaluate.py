"""Held-out evaluation: success and reward on test-split seeds, overall and per category.

The same `(env_id, split, n_eval, seed)` always plays the same tasks (the Collector derives each
group's seed from `seed`), so before/after comparisons are paired.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from creditgym.agents.base import Policy, Sampling
from creditgym.agents.rollout import Collector
from creditgym.trajectory import Episode, TaskSpec, episode_success

__all__ = ["EVAL_CONFIG", "EvalResult", "evaluate", "format_table", "load_eval_config", "save_eval_config"]

EVAL_CONFIG = "eval_config.json"
"""File beside a saved model: the evaluation it was measured with, `creditgym eval`'s defaults for it."""
EVAL_KEYS = ("n_eval", "seed", "split", "temperature", "max_new_tokens")


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


def save_eval_config(
    model_dir: str | Path,
    env_id: str,
    env_kwargs: Mapping[str, Any] | None = None,
    n_eval: int = 64,
    seed: int = 10_000,
    split: str = "test",
    temperature: float = 1.0,
    max_new_tokens: int = 64,
) -> Path:
    """Write `model_dir/eval_config.json`: the env id and the `evaluate` arguments of the number
    reported for this model, so `creditgym eval ENV_ID --model model_dir` reproduces it."""
    kwargs = {k: v for k, v in dict(env_kwargs or {}).items() if k != "split"}
    data = {"env_id": env_id, "env_kwargs": kwargs, "n_eval": int(n_eval), "seed": int(seed), "split": split,
            "temperature": float(temperature), "max_new_tokens": int(max_new_tokens)}  # fmt: skip
    path = Path(model_dir) / EVAL_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def load_eval_config(model_dir: str | Path) -> dict[str, Any] | None:
    """The eval config saved beside a model folder (None when there is none)."""
    path = Path(model_dir) / EVAL_CONFIG
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    missing = [k for k in ("env_id", "env_kwargs", *EVAL_KEYS) if k not in data]
    if missing:
        raise ValueError(f"{path} lacks {missing}; rewrite it with trainers.evaluate.save_eval_config")
    return dict(data)


def _stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else 0.0


def evaluate(
    policy: Policy,
    env_id: str,
    n_eval: int = 64,
    seed: int = 10_000,
    split: str = "test",
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    env_kwargs: Mapping[str, Any] | None = None,
    categories: Mapping[str, Mapping[str, Any]] | None = None,
    max_context_tokens: int | None = None,
    history: Any = None,
) -> EvalResult:
    """Play `n_eval` episodes per category (one per test-split seed) and report success and reward.

    `categories` maps a label (e.g. a difficulty) to the env kwargs that select it; None plays the
    env as configured under the label "all". `temperature=0` evaluates greedily. `max_context_tokens`
    and `history` are the Collector's (None: the policy's context length; the env's history).
    Sampling is seeded from `seed`, so a saved model reproduces its number (`save_eval_config`).
    """
    kwargs = {**dict(env_kwargs or {}), "split": split}
    cats: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (categories or {"all": {}}).items()}
    col = Collector(
        policy, env_id, group_size=1, env_kwargs=kwargs,
        sampling=Sampling(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed),
        max_context_tokens=max_context_tokens, history=history,
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
