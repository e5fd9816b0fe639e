"""Standard advantage metrics of CREDIT.md 1.6, computed on device with one host copy; and the loop twin."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.group_stats import Ep, groups_of, mean, std

__all__ = ["ZERO_TOL", "standard_metrics", "standard_metrics_loop"]

ZERO_TOL = 1e-8  # |A| <= ZERO_TOL counts as a zero advantage


def _masked_mean_std(x: Tensor, m: Tensor, dim: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and unbiased std (0 for fewer than two values) of `x` where `m`, with the count."""
    mf = m.to(x.dtype)
    n = mf.sum() if dim is None else mf.sum(dim)
    mean = (x * mf).sum() / n.clamp(min=1) if dim is None else (x * mf).sum(dim) / n.clamp(min=1)
    c = torch.where(m, x - (mean if dim is None else mean.unsqueeze(dim)), 0.0)
    ss = (c * c).sum() if dim is None else (c * c).sum(dim)
    std = torch.sqrt(ss / (n - 1).clamp(min=1)) * (n > 1)
    return mean, std, n


def _group_metrics(batch: CreditBatch, dtype: torch.dtype) -> list[tuple[str, Tensor]]:
    """`groups/num`, `groups/frac_singleton`, `groups/frac_all_equal` over groups of episodes with turns."""
    has_B = batch.turn_mask_BK.any(1)
    uniq, g_B = torch.unique(batch.group_B, return_inverse=True)
    S = max(1, int(uniq.numel()))
    w = has_B.to(dtype)
    R = batch.outcome_B.to(dtype)
    size_S = torch.zeros(S, dtype=dtype, device=R.device).index_add(0, g_B, w)
    hi = torch.full((S,), float("-inf"), dtype=dtype, device=R.device)
    hi = hi.scatter_reduce(0, g_B, torch.where(has_B, R, float("-inf")), "amax")
    lo = torch.full((S,), float("inf"), dtype=dtype, device=R.device)
    lo = lo.scatter_reduce(0, g_B, torch.where(has_B, R, float("inf")), "amin")
    present = size_S > 0
    num = present.sum().to(dtype)
    equal = (size_S >= 2) & ((hi - lo) <= ZERO_TOL)
    den = num.clamp(min=1)
    return [
        ("groups/num", num),
        ("groups/frac_singleton", (size_S == 1).sum().to(dtype) / den),
        ("groups/frac_all_equal", equal.sum().to(dtype) / den),
    ]


def standard_metrics(
    batch: CreditBatch, turn_BK: Tensor, zero_tokens: Tensor, extras: Mapping[str, Tensor | float]
) -> dict[str, float]:
    """The metrics every estimator reports (CREDIT.md 1.6) merged with `extras`.

    `zero_tokens` is `adv/frac_zero_tokens`, which `make_advantages` computes from whichever of the
    turn or token view is cheaper. `adv/turn{k}/*` appear only for turn slots k with a valid turn.
    """
    dtype = turn_BK.dtype if turn_BK.is_floating_point() else torch.float32
    m_BK = batch.turn_mask_BK
    zt = zero_tokens
    zk = ((turn_BK.abs() <= ZERO_TOL) & m_BK).sum().to(dtype) / m_BK.sum().clamp(min=1).to(dtype)
    mean, std, _ = _masked_mean_std(turn_BK, m_BK)
    abs_max = torch.where(m_BK, turn_BK.abs(), 0.0).amax() if turn_BK.numel() else torch.zeros((), dtype=dtype)
    mean_K, std_K, n_K = _masked_mean_std(turn_BK, m_BK, dim=0)
    named: list[tuple[str, Tensor]] = [
        ("adv/frac_zero_tokens", zt),
        ("adv/frac_zero_turns", zk),
        ("adv/mean", mean),
        ("adv/std", std),
        ("adv/abs_max", abs_max),
        *_group_metrics(batch, dtype),
        ("batch/frac_truncated", batch.truncated_B.to(dtype).mean()),
        ("batch/mean_turns", m_BK.sum(1).to(dtype).mean()),
    ]
    for key, v in extras.items():
        named.append((key, v if isinstance(v, Tensor) else torch.tensor(float(v))))
    scalars = torch.stack([v.to(device=turn_BK.device, dtype=dtype).reshape(()) for _, v in named])
    host = torch.cat([scalars, mean_K, std_K, n_K.to(dtype)]).tolist()  # the one host copy
    out = {name: float(x) for (name, _), x in zip(named, host)}
    K = turn_BK.shape[1]
    rest = host[len(named) :]
    for k in range(K):
        if rest[2 * K + k] > 0:
            out[f"adv/turn{k}/mean"] = float(rest[k])
            out[f"adv/turn{k}/std"] = float(rest[K + k])
    return out


def standard_metrics_loop(eps_: list[Ep], turn: list[list[float]], token: list[list[float]]) -> dict[str, float]:
    """`standard_metrics` by loops over the episodes (without extras)."""
    vals = [turn[e.b][k] for e in eps_ for k in range(e.n)]
    toks = [token[e.b][t] for e in eps_ for t in range(len(e.loss)) if e.loss[t]]
    m: dict[str, float] = {
        "adv/frac_zero_tokens": sum(abs(x) <= ZERO_TOL for x in toks) / max(1, len(toks)),
        "adv/frac_zero_turns": sum(abs(x) <= ZERO_TOL for x in vals) / max(1, len(vals)),
        "adv/mean": mean(vals),
        "adv/std": std(vals),
        "adv/abs_max": max((abs(x) for x in vals), default=0.0),
    }
    groups = groups_of(eps_)
    num = len(groups)
    m["groups/num"] = float(num)
    m["groups/frac_singleton"] = sum(len(g) == 1 for g in groups.values()) / max(1, num)
    equal = 0
    for g in groups.values():
        Rs = [e.R for e in g]
        equal += len(g) >= 2 and max(Rs) - min(Rs) <= ZERO_TOL
    m["groups/frac_all_equal"] = equal / max(1, num)
    m["batch/frac_truncated"] = sum(e.truncated for e in eps_) / len(eps_)
    m["batch/mean_turns"] = sum(e.n for e in eps_) / len(eps_)
    K = len(turn[0]) if turn else 0
    for k in range(K):
        col = [turn[e.b][k] for e in eps_ if k < e.n]
        if col:
            m[f"adv/turn{k}/mean"] = mean(col)
            m[f"adv/turn{k}/std"] = std(col)
    return m
