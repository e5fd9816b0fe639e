"""Held-out evaluation: success and reward on test-split seeds, overall and per category.

The same `(env_id, split, n_eval, seed)` always plays the same tasks (the Collector derives each
group's seed from `seed`), so before/after comparisons are paired. With `samples=n > 1` each task is
played n times and the result also holds pass@1, pass@k (the unbiased estimator of Chen et al.,
"Evaluating Large Language Models Trained on Code", arXiv 2107.03374) and maj@n (the share of tasks
whose majority `<answer>` is correct; TTRL, arXiv 2504.16084). Envs that count tool calls (Search's
`n_search`, Tools' `n_calls`) also get `tool_calls` per episode and `tool_productivity`, correct
answers per tool call (OTC, arXiv 2504.14870).
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
from creditgym.trainers.rewards import extract_answer, majority_vote, tool_metrics
from creditgym.trajectory import Episode, TaskSpec, episode_success

__all__ = ["EVAL_CONFIG", "EvalResult", "evaluate", "format_table", "load_eval_config", "maj_at_n", "pass_at_k",
           "sample_metrics", "save_eval_config"]  # fmt: skip

EVAL_CONFIG = "eval_config.json"
"""File beside a saved model: the evaluation it was measured with, `creditgym eval`'s defaults for it."""
EVAL_KEYS = ("n_eval", "seed", "split", "temperature", "max_new_tokens")


@dataclass(frozen=True)
class EvalResult:
    """`success` / `reward` are means over `n` episodes; `by_category` holds the same per category;
    `metrics` the sample metrics over all tasks (pass@k, maj@n with `samples > 1`; tool productivity)."""

    success: float
    reward: float
    n: int
    split: str
    by_category: dict[str, dict[str, float]] = field(default_factory=dict)
    episodes: tuple[Episode, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "reward": self.reward, "n": self.n, "split": self.split,
                "by_category": self.by_category, "metrics": self.metrics}  # fmt: skip


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


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (arXiv 2107.03374): 1 - C(n-c, k) / C(n, k)."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def maj_at_n(group: Sequence[Episode]) -> float:
    """1.0 when the group's majority answer (`<answer>` blocks, normalised; ties to the first seen) is
    correct: an episode giving that answer succeeded. 0.0 with no answer at all."""
    answers = [extract_answer(e) for e in group]
    label, _ = majority_vote(answers)
    if label is None:
        return 0.0
    return float(any(episode_success(e) >= 1.0 for e, a in zip(group, answers) if a == label))


def sample_metrics(groups: Sequence[Sequence[Episode]], ks: Sequence[int] = (1,)) -> dict[str, float]:
    """Means over tasks (one group of n samples each) of pass@k for each k <= n, and maj@n when n > 1."""
    out: dict[str, float] = {}
    if not groups:
        return out
    n = min(len(g) for g in groups)
    for k in sorted({1, *ks}):
        if k <= n:
            out[f"pass@{k}"] = sum(pass_at_k(len(g), sum(episode_success(e) >= 1.0 for e in g), k) for g in groups) / len(groups)
    if n > 1:
        out[f"maj@{n}"] = sum(maj_at_n(g) for g in groups) / len(groups)
    return out


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
    samples: int = 1,
    pass_k: Sequence[int] = (1,),
) -> EvalResult:
    """Play `n_eval` episodes per category (one per test-split seed) and report success and reward.

    `categories` maps a label (e.g. a difficulty) to the env kwargs that select it; None plays the
    env as configured under the label "all". `temperature=0` evaluates greedily. `max_context_tokens`
    and `history` are the Collector's (None: the policy's context length; the env's history).
    Sampling is seeded from `seed`, so a saved model reproduces its number (`save_eval_config`).
    `samples` plays each task that many times (TTRL's evaluation: 16 at temperature 0.6) and adds
    pass@k for each k in `pass_k` (k <= samples) and maj@samples to `metrics`.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    kwargs = {**dict(env_kwargs or {}), "split": split}
    cats: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (categories or {"all": {}}).items()}
    col = Collector(
        policy, env_id, group_size=samples, env_kwargs=kwargs,
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
    groups: dict[str, list[Episode]] = {}
    for e in episodes:
        groups.setdefault(e.group_id, []).append(e)
    metrics = {**sample_metrics(list(groups.values()), pass_k), **tool_metrics(episodes)}
    return EvalResult(
        success=sum(episode_success(e) for e in episodes) / max(n, 1),
        reward=sum(e.total_reward for e in episodes) / max(n, 1),
        n=n,
        split=split,
        by_category=by_cat,
        episodes=tuple(episodes),
        metrics=metrics,
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
