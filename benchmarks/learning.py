"""Learning-study summaries (issue 19 item 3; docs/credit.md "Does accuracy predict learning?"):
curves of held-out success (or reward) against training episodes, per estimator and seed, reduced
to the numbers the study reports. `examples/compare_credit.py` runs the study and calls these.

* `summarize`: per estimator, mean and spread over seeds at each evaluation, the episodes each seed
  needed to reach a threshold (its first evaluation at or above it; None if never), and the area
  under the curve normalised by the budget (mean success over training, trapezoids).
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

__all__ = ["accuracy_vs_learning", "auc", "episodes_to", "summarize"]


def episodes_to(curve: Sequence[float], samples: Sequence[int], level: float) -> int | None:
    """Training episodes at the first evaluation at or above `level` (None: never reached)."""
    return next((n for n, s in zip(samples, curve, strict=True) if s >= level), None)


def auc(curve: Sequence[float], samples: Sequence[int]) -> float:
    """Mean of the curve over the budget (trapezoids over training episodes)."""
    area = sum((samples[i + 1] - samples[i]) * (curve[i] + curve[i + 1]) / 2 for i in range(len(curve) - 1))
    return area / max(samples[-1] - samples[0], 1)


def summarize(
    results: Mapping[str, Mapping[int, Sequence[float]]], samples: Sequence[int], threshold: float | None
) -> dict[str, Any]:
    """`results[estimator][seed]` is a curve evaluated at `samples` training episodes. The threshold
    defaults to halfway from the mean start to the best mean of any estimator at any evaluation."""
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
        }  # fmt: skip
    return {"threshold": level, "table": table}


def accuracy_vs_learning(table: Mapping[str, Any], report: Mapping[str, Any]) -> dict[str, Any]:
    """Spearman correlation of benchmark accuracy and AUC over the estimators in both."""
    acc = {r["name"]: r["spearman"] for r in report["rows"] if r.get("spearman") is not None}
    names = [n for n in table if n in acc]
    rho = spearman(np.array([acc[n] for n in names]), np.array([table[n]["auc_mean"] for n in names]))
    return {"estimators": names, "accuracy": [acc[n] for n in names], "spearman_accuracy_auc": rho}
