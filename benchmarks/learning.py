"""Learning-study summaries (issue 19 item 3; docs/credit.md "Does accuracy predict learning?"):
curves of held-out success (or reward) against training episodes, per estimator and seed, reduced
to the numbers the study reports. `examples/compare_credit.py` runs the study and calls these.

* `summarize`: per estimator, mean and spread over seeds at each evaluation, the episodes each seed
  needed to reach a threshold (its first evaluation at or above it; None if never), and the area
  under the curve normalised by the budget (mean success over training, trapezoids).
* `merge_studies`: one study from reports of runs split over processes or sessions (the same env,
  warm start and evaluations; different estimators or seeds), summarized again over all of them.
* `accuracy_vs_learning`: Spearman correlation, over the estimators in both, of each estimator's
  benchmark accuracy (rank correlation with the Monte-Carlo truth, a `creditgym bench accuracy
  --json` report) and its learning speed (AUC).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from creditgym.benchmarks.accuracy_metrics import spearman

__all__ = ["accuracy_vs_learning", "auc", "episodes_to", "merge_studies", "summarize"]


def episodes_to(curve: Sequence[float], samples: Sequence[int], level: float) -> int | None:
    """Training episodes at the first evaluation at or above `level` (None: never reached)."""
    return next((n for n, s in zip(samples, curve, strict=True) if s >= level), None)


def auc(curve: Sequence[float], samples: Sequence[int]) -> float:
    """Mean of the curve over the budget (trapezoids over training episodes)."""
    area = sum((samples[i + 1] - samples[i]) * (curve[i] + curve[i + 1]) / 2 for i in range(len(curve) - 1))
    return area / max(samples[-1] - samples[0], 1)


def summarize(
    results: Mapping[str, Mapping[int, Sequence[float]]],
    samples: Sequence[int],
    threshold: float | None,
    finals: Mapping[str, Mapping[int, Mapping[str, float]]] | None = None,
) -> dict[str, Any]:
    """`results[estimator][seed]` is a curve evaluated at `samples` training episodes. The threshold
    defaults to halfway from the mean start to the best mean of any estimator at any evaluation.
    `finals[estimator][seed]` (optional) holds a run's last-evaluation metrics: each estimator's
    `final` is their mean over seeds (the keys every seed has), `final_by_seed` keeps them."""
    start = statistics.mean(c[0] for by_seed in results.values() for c in by_seed.values())
    best = max(statistics.mean(c[i] for c in by_seed.values()) for by_seed in results.values()
               for i in range(len(samples)))  # fmt: skip
    level = threshold if threshold is not None else start + (best - start) / 2
    table: dict[str, Any] = {}
    for name, by_seed in results.items():
        curves = list(by_seed.values())
        reach = [episodes_to(c, samples, level) for c in curves]
        aucs = [auc(c, samples) for c in curves]
        table[name] = {
            "curve": [{"samples": samples[i], "mean": statistics.mean(c[i] for c in curves),
                       "sd": statistics.pstdev([c[i] for c in curves])} for i in range(len(samples))],
            "episodes_to_threshold": reach,
            "reached": sum(r is not None for r in reach),
            "auc_mean": statistics.mean(aucs), "auc_sd": statistics.pstdev(aucs),
            "by_seed": {str(seed): list(c) for seed, c in by_seed.items()},
        }  # fmt: skip
        if finals and finals.get(name):
            per_seed = finals[name]
            keys = set.intersection(*(set(m) for m in per_seed.values()))
            table[name]["final"] = {k: statistics.mean(m[k] for m in per_seed.values()) for k in sorted(keys)}
            table[name]["final_by_seed"] = {str(seed): dict(m) for seed, m in per_seed.items()}
    return {"threshold": level, "table": table}


MERGE_KEYS = ("env_id", "env_kwargs", "metric", "start", "budget_episodes")


def merge_studies(reports: Sequence[Mapping[str, Any]], threshold: float | None = None) -> dict[str, Any]:
    """One study from `reports` (compare_credit's JSON) of runs that shared a warm start and budget.

    Each report's `table[name]["by_seed"]` holds its curves; a (estimator, seed) pair in two reports
    is an error (the same run twice). The threshold, when None, is recomputed over all curves, so a
    merged study reads as if run in one process. Final metrics are merged per seed (`final_by_seed`;
    a report without it gives each of its seeds its `final` mean, the same seed-weighted mean)."""
    if not reports:
        raise ValueError("merge_studies: no reports given")
    first = reports[0]
    for r in reports[1:]:
        diff = [k for k in MERGE_KEYS if r.get(k) != first.get(k)]
        if diff:
            raise ValueError(f"merge_studies: reports differ in {diff}; merge only runs of one study "
                             "(same env, warm start, budget and metric)")  # fmt: skip
    samples = [row["samples"] for row in next(iter(first["table"].values()))["curve"]]
    results: dict[str, dict[int, list[float]]] = {}
    finals: dict[str, dict[int, dict[str, float]]] = {}
    for r in reports:
        for name, row in r["table"].items():
            if "by_seed" not in row:
                raise ValueError(f"merge_studies: {name!r} has no per-seed curves (a report from before they were kept)")
            if [c["samples"] for c in row["curve"]] != samples:
                raise ValueError(f"merge_studies: {name!r} was evaluated at other episode counts than {samples}")
            for seed, curve in row["by_seed"].items():
                if int(seed) in results.get(name, {}):
                    raise ValueError(f"merge_studies: {name!r} seed {seed} appears in two reports")
                results.setdefault(name, {})[int(seed)] = list(curve)
            by_seed = row.get("final_by_seed") or ({s: row["final"] for s in row["by_seed"]} if "final" in row else {})
            finals.setdefault(name, {}).update({int(seed): dict(m) for seed, m in by_seed.items()})
    out = {k: first[k] for k in MERGE_KEYS if k in first}
    out.update(summarize(results, samples, threshold, finals))
    return out


def accuracy_vs_learning(table: Mapping[str, Any], report: Mapping[str, Any]) -> dict[str, Any]:
    """Spearman correlation of benchmark accuracy and AUC over the estimators in both."""
    acc = {r["name"]: r["spearman"] for r in report["rows"] if r.get("spearman") is not None}
    names = [n for n in table if n in acc]
    rho = spearman(np.array([acc[n] for n in names]), np.array([table[n]["auc_mean"] for n in names]))
    return {"estimators": names, "accuracy": [acc[n] for n in names], "spearman_accuracy_auc": rho}
