"""Pure math of the credit accuracy benchmark (docs/accuracy.md): Monte-Carlo truth from branch
returns, its standard error and noise ceiling, and the agreement metrics of an estimator with it.

Arrays are numpy float64; `_N` is a flat index over every valid turn of the base episodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Agreement",
    "TurnTruth",
    "agreement",
    "average_ranks",
    "noise_ceiling",
    "pearson",
    "spearman",
    "truth_from_branches",
]


def average_ranks(x_N: np.ndarray) -> np.ndarray:
    """Ranks 1..N of `x_N`, ties sharing the mean of their ranks (as Spearman's rho needs)."""
    x_N = np.asarray(x_N, dtype=np.float64)
    order = np.argsort(x_N, kind="mergesort")
    sorted_N = x_N[order]
    ranks_N = np.empty(len(x_N), dtype=np.float64)
    start = 0
    while start < len(x_N):
        end = start
        while end + 1 < len(x_N) and sorted_N[end + 1] == sorted_N[start]:
            end += 1
        ranks_N[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks_N


def pearson(x_N: np.ndarray, y_N: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant or has fewer than 2 points."""
    x_N, y_N = np.asarray(x_N, np.float64), np.asarray(y_N, np.float64)
    if len(x_N) < 2 or x_N.max() == x_N.min() or y_N.max() == y_N.min():
        return math.nan  # constant (tested exactly: centring leaves rounding residue, not zeros)
    dx, dy = x_N - x_N.mean(), y_N - y_N.mean()
    den = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / den if den > 0 else math.nan


def spearman(x_N: np.ndarray, y_N: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson on average ranks); NaN when a side is constant."""
    return pearson(average_ranks(x_N), average_ranks(y_N))


@dataclass(frozen=True)
class TurnTruth:
    """Monte-Carlo truth per valid base turn (flat over episodes, then turns).

    `adv_N` = A*_k = r_k + gamma * V(s_{k+1}) - V(s_k) (V after the last turn = 0), `se_N` its
    standard error; `half1_N` / `half2_N` the same truth from two disjoint halves of the branches
    (for the noise ceiling); `value_N` = V(s_k); `turn_N` = k; `episode_N` = base episode index.
    """

    adv_N: np.ndarray
    se_N: np.ndarray
    value_N: np.ndarray
    half1_N: np.ndarray
    half2_N: np.ndarray
    turn_N: np.ndarray
    episode_N: np.ndarray


def truth_from_branches(
    rewards: Sequence[Sequence[float]], branch_returns: Sequence[Sequence[Sequence[float]]], gamma: float = 1.0
) -> TurnTruth:
    """The truth of docs/accuracy.md from branch returns.

    `rewards[b][k]`: base episode b's reward at turn k. `branch_returns[b][k]`: the discounted
    returns-to-go from turn k of the M >= 2 branch rollouts forked before turn k of episode b.
    V(s_k) is their mean, Var(V) their unbiased variance / M; the state after the last turn has
    value 0 (terminated: nothing follows; truncated: the branches obey the same turn budget, so
    their values already price the truncation). Independent branch sets make the two variances add.
    """
    cols: dict[str, list[float]] = {k: [] for k in ("adv", "se", "value", "h1", "h2", "turn", "ep")}
    for b, (r_K, g_K) in enumerate(zip(rewards, branch_returns, strict=True)):
        n = len(r_K)
        if len(g_K) != n:
            raise ValueError(f"episode {b}: {n} rewards but branch returns for {len(g_K)} turns")
        v, var, v1, v2 = [0.0] * (n + 1), [0.0] * (n + 1), [0.0] * (n + 1), [0.0] * (n + 1)
        for k, g in enumerate(g_K):
            g_M = np.asarray(g, np.float64)
            if len(g_M) < 2:
                raise ValueError(f"episode {b} turn {k}: {len(g_M)} branch returns; the truth needs >= 2 per turn")
            v[k], var[k] = float(g_M.mean()), float(g_M.var(ddof=1)) / len(g_M)
            v1[k], v2[k] = float(g_M[0::2].mean()), float(g_M[1::2].mean())
        for k in range(n):
            cols["adv"].append(float(r_K[k]) + gamma * v[k + 1] - v[k])
            cols["se"].append(math.sqrt(var[k] + gamma**2 * var[k + 1]))
            cols["value"].append(v[k])
            cols["h1"].append(float(r_K[k]) + gamma * v1[k + 1] - v1[k])
            cols["h2"].append(float(r_K[k]) + gamma * v2[k + 1] - v2[k])
            cols["turn"].append(k)
            cols["ep"].append(b)
    arr = {k: np.asarray(x, np.float64) for k, x in cols.items()}
    return TurnTruth(arr["adv"], arr["se"], arr["value"], arr["h1"], arr["h2"],
                     arr["turn"].astype(np.int64), arr["ep"].astype(np.int64))  # fmt: skip


def noise_ceiling(half1_N: np.ndarray, half2_N: np.ndarray, rank: bool = True) -> float:
    """The correlation an exact estimator would reach against the full-M truth: split-half
    reliability r of two independent M/2-branch truths, Spearman-Brown corrected to M branches
    (rel = 2r / (1 + r)), then its square root (classical test theory: corr(A, A + e) = sqrt(rel)).
    0 when the halves do not correlate positively; NaN when undefined."""
    r = spearman(half1_N, half2_N) if rank else pearson(half1_N, half2_N)
    if math.isnan(r):
        return math.nan
    if r <= 0:
        return 0.0
    return math.sqrt(2.0 * r / (1.0 + r))


@dataclass(frozen=True)
class Agreement:
    """An estimator's agreement with the truth (docs/accuracy.md, "Metrics")."""

    spearman: float
    pearson: float
    sign_agree: float  # over turns with |A*| > 2 SE; NaN when there are none
    n_sign: int
    rel_mse: float  # min_c ||c a - A*||^2 / ||A*||^2
    spearman_first: float  # turn 0 only
    spearman_later: float  # turns >= 1


def agreement(a_N: np.ndarray, truth: TurnTruth) -> Agreement:
    """Compare estimator advantages `a_N` (aligned with `truth`) with the truth."""
    a_N = np.asarray(a_N, np.float64)
    t_N = truth.adv_N
    if a_N.shape != t_N.shape:
        raise ValueError(f"agreement: {a_N.shape[0]} advantages for {t_N.shape[0]} truth turns")
    sure_N = np.abs(t_N) > 2.0 * truth.se_N
    n_sign = int(sure_N.sum())
    sign = float((np.sign(a_N[sure_N]) == np.sign(t_N[sure_N])).mean()) if n_sign else math.nan
    tt, aa, at = float(t_N @ t_N), float(a_N @ a_N), float(a_N @ t_N)
    if tt == 0:
        rel = math.nan
    else:
        rel = 1.0 if aa == 0 else max(0.0, 1.0 - at * at / (aa * tt))  # residual of the best c = at / aa
    first_N, later_N = truth.turn_N == 0, truth.turn_N > 0
    return Agreement(
        spearman=spearman(a_N, t_N),
        pearson=pearson(a_N, t_N),
        sign_agree=sign,
        n_sign=n_sign,
        rel_mse=rel,
        spearman_first=spearman(a_N[first_N], t_N[first_N]),
        spearman_later=spearman(a_N[later_N], t_N[later_N]),
    )
