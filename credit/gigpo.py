"""GiGPO: Group-in-Group Policy Optimization (arXiv 2505.10978), CREDIT.md section 5.

The loop reference (`gigpo_loop`, CREDIT.md 9.1), then the vectorised estimator and its metrics.
"""

from __future__ import annotations

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import Advantages, make_advantages, make_advantages_loop
from creditgym.credit.group_stats import (
    SINGLETON_RULES,
    episode_groups,
    episodes_of,
    flat_group_BK,
    group_z,
    groups_of,
    mean,
    normalize,
    z,
)
from creditgym.credit.registry import check_choice, register_estimator
from creditgym.credit.returns import rtg, rtg_loop

__all__ = ["gigpo"]

ANCHOR_SIZE_BINS = 8  # anchor_size_frac/1..8, then 9+


def _anchor_metrics(cnt_S: Tensor, member_cnt_N: Tensor, n_valid: Tensor) -> dict[str, Tensor]:
    dt = cnt_S.dtype
    present = cnt_S > 0
    num = present.sum().to(dt).clamp(min=1)
    out = {}
    for size in range(1, ANCHOR_SIZE_BINS + 1):
        out[f"gigpo/anchor_size_frac/{size}"] = (cnt_S == size).sum().to(dt) / num
    out[f"gigpo/anchor_size_frac/{ANCHOR_SIZE_BINS + 1}+"] = (cnt_S > ANCHOR_SIZE_BINS).sum().to(dt) / num
    out["gigpo/frac_steps_singleton"] = (member_cnt_N == 1).sum().to(dt) / n_valid.clamp(min=1)
    return out


def gigpo_loop(batch: CreditBatch, gamma: float = 0.95, omega: float = 1.0, norm: str = "mean",
               episode_stats: str = "steps", singleton: str = "raw", eps: float = 1e-6) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    use_std = norm == "std"
    X = {e.b: rtg_loop(e.r, gamma) for e in eps_}
    anchors: dict[tuple[int, int], list[float]] = {}
    for e in eps_:
        for k in range(e.n):
            anchors.setdefault((e.g, e.state[k]), []).append(X[e.b][k])
    turn = [[0.0] * batch.K for _ in eps_]
    shares, singles = [], 0
    for e in eps_:
        if not e.n:
            continue
        G = groups[e.g]
        E = [o.R for o in G for _ in range(o.n)] if episode_stats == "steps" else [o.R for o in G]
        A_E = z(e.R, E, eps, use_std, singleton)
        for k in range(e.n):
            S = anchors[(e.g, e.state[k])]
            singles += len(S) == 1
            A_S = z(X[e.b][k], S, eps, use_std)
            turn[e.b][k] = A_E + omega * A_S
            den = abs(A_E) + abs(omega * A_S)
            shares.append(abs(omega * A_S) / den if den > 0 else 0.0)
    sizes = [len(v) for v in anchors.values()]
    extras = {f"gigpo/anchor_size_frac/{s}": sum(x == s for x in sizes) / max(1, len(sizes)) for s in range(1, 9)}
    extras["gigpo/anchor_size_frac/9+"] = sum(x > 8 for x in sizes) / max(1, len(sizes))
    extras["gigpo/frac_steps_singleton"] = singles / max(1, sum(e.n for e in eps_))
    extras["gigpo/step_share"] = mean(shares)
    return make_advantages_loop(batch, eps_, turn, None, extras)


@register_estimator("gigpo", loop=gigpo_loop)
def gigpo(
    batch: CreditBatch,
    *,
    gamma: float = 0.95,
    omega: float = 1.0,
    norm: str = "mean",
    episode_stats: str = "steps",
    singleton: str = "raw",
    eps: float = 1e-6,
) -> Advantages:
    """GiGPO (arXiv 2505.10978): episode-group term plus a step term over anchor states.

    `A[b,k] = A_E[b] + omega * A_S[b,k]`; anchors are the valid turns of one group taken from the
    same `state_BK`; `episode_stats="steps"` pools one copy of R per step (verl-agent's code).
    """
    check_choice("gigpo", "norm", norm, ("mean", "std"))
    check_choice("gigpo", "episode_stats", episode_stats, ("steps", "episodes"))
    check_choice("gigpo", "singleton", singleton, SINGLETON_RULES)
    mask = batch.turn_mask_BK
    dt = batch.rewards_BK.dtype
    B, K = mask.shape
    eg = episode_groups(batch)
    use_std = norm == "std"
    n_B = mask.sum(1).to(dt)
    w_B = n_B if episode_stats == "steps" else eg.has_B.to(dt)
    A_E = group_z(batch.outcome_B.to(dt), eg, use_std=use_std, eps=eps, singleton=singleton, w_B=w_B)
    X = rtg(torch.where(mask, batch.rewards_BK, 0.0), gamma)
    seg, S = flat_group_BK(eg.g_B, batch.state_BK)
    w_N = mask.reshape(-1).to(dt)
    A_S = normalize(X.reshape(-1), seg, w_N, S, use_std=use_std, eps=eps).view(B, K)
    A = A_E[:, None] + omega * A_S
    cnt_S = torch.zeros(S, dtype=dt, device=X.device).index_add_(0, seg, w_N)
    member_cnt = torch.where(mask.reshape(-1), cnt_S[seg], 0.0)
    extras: dict[str, Tensor] = _anchor_metrics(cnt_S, member_cnt, mask.sum().to(dt))
    step = (omega * A_S).abs()
    share = torch.where(mask, step / (A_E.abs()[:, None] + step).clamp(min=1e-12), 0.0)
    share = torch.where(A_E.abs()[:, None] + step > 0, share, 0.0)
    extras["gigpo/step_share"] = share.sum() / mask.sum().clamp(min=1).to(dt)
    return make_advantages(batch, torch.where(mask, A, 0.0), extras=extras)
