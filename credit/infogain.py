"""Information gain and potentials: `igpo` and `siop` (CREDIT.md section 8).

Each section holds the loop reference (`*_loop`, CREDIT.md 9.1) and then the vectorised estimator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import Advantages, make_advantages, make_advantages_loop
from creditgym.credit.group_stats import (
    Ep,
    episode_groups,
    episodes_of,
    flat_group_BK,
    groups_of,
    mean,
    normalize,
    z,
)
from creditgym.credit.registry import check_choice, check_finite, register_estimator, require
from creditgym.credit.returns import rtg, rtg_loop
from creditgym.credit.turn import info_gain_BK, last_and_inner, norm_turns, probe_used_BK1

__all__ = ["igpo", "siop"]


# ---------------------------------------------------------------- igpo (8.1)
def _pooled_rtg_loop(batch: CreditBatch, eps_: list[Ep], r: dict[int, list[float]], gamma: float, use_std: bool,
                     eps: float, pool_key: Callable[[Ep, int], object]) -> list[list[float]]:  # fmt: skip
    groups = groups_of(eps_)
    turn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        if not e.n:
            continue
        Z = []
        for k in range(e.n):
            S = [r[o.b][j] for o in groups[e.g] for j in range(o.n) if pool_key(o, j) == pool_key(e, k)]
            Z.append(z(r[e.b][k], S, eps, use_std))
        turn[e.b][: e.n] = rtg_loop(Z, gamma)
    return turn


def igpo_loop(batch: CreditBatch, gamma: float = 1.0, norm: str = "joint", use_std: bool = True,
              eps: float = 1e-6) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    r: dict[int, list[float]] = {}
    igs = []
    for e in eps_:
        assert e.probe is not None
        ig = [e.probe[k + 1] - e.probe[k] for k in range(e.n - 1)]
        igs += ig
        r[e.b] = [*ig, e.R] if e.n else []
    key = (lambda e, k: 0) if norm == "joint" else (lambda e, k: k == e.n - 1)
    turn = _pooled_rtg_loop(batch, eps_, r, gamma, use_std, eps, key)
    extras = {"igpo/ig_mean": mean(igs), "igpo/frac_negative_ig": sum(x < 0 for x in igs) / max(1, len(igs))}
    return make_advantages_loop(batch, eps_, turn, None, extras)


@register_estimator("igpo", needs={"probe": "gold"}, loop=igpo_loop)
def igpo(
    batch: CreditBatch, *, gamma: float = 1.0, norm: str = "joint", use_std: bool = True, eps: float = 1e-6
) -> Advantages:
    """IGPO (arXiv 2510.14967): information-gain turn rewards (gold-answer probability gains), the
    outcome on the last turn, group-normalised jointly or separately, then accumulated (8.1)."""
    check_choice("igpo", "norm", norm, ("joint", "separate"))
    mask = batch.turn_mask_BK
    IG, inner = info_gain_BK("igpo", batch)
    _, last, _ = last_and_inner(batch)
    dt = IG.dtype
    r = torch.where(last, batch.outcome_B.to(dt)[:, None].expand_as(IG), IG)
    eg = episode_groups(batch)
    if norm == "joint":
        Z = norm_turns(r, eg, mask, by_index=False, use_std=use_std, eps=eps)
    else:
        B, K = mask.shape
        seg, S = flat_group_BK(eg.g_B, last.to(torch.int64))
        Z = normalize(r.reshape(-1), seg, mask.reshape(-1).to(dt), S, use_std=use_std, eps=eps).view(B, K)
    A = rtg(Z, gamma)
    n_ig = inner.sum().to(dt)
    extras = {
        "igpo/ig_mean": IG.sum() / n_ig.clamp(min=1),
        "igpo/frac_negative_ig": ((IG < 0) & inner).sum().to(dt) / n_ig.clamp(min=1),
    }
    return make_advantages(batch, A, extras=extras)


# ---------------------------------------------------------------- siop (8.2)
def siop_loop(batch: CreditBatch, lam: float = 0.5, gamma: float = 1.0, gamma_phi: float = 1.0,
              use_std: bool = True, eps: float = 1e-6) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    r: dict[int, list[float]] = {}
    for e in eps_:
        if e.n == 1:
            r[e.b] = [(1 - lam) * e.R]
            continue
        assert e.probe is not None
        F = [gamma_phi * e.probe[k + 1] - e.probe[k] for k in range(e.n)]
        r[e.b] = [F[k] + ((1 - lam) * e.R if k == e.n - 1 else 0.0) for k in range(e.n)]
    turn = _pooled_rtg_loop(batch, eps_, r, gamma, use_std, eps, lambda e, k: 0)
    return make_advantages_loop(batch, eps_, turn)


@register_estimator("siop", needs={"probe": "siop", "outcome_key": "siop_q"}, loop=siop_loop)
def siop(
    batch: CreditBatch,
    *,
    lam: float = 0.5,
    gamma: float = 1.0,
    gamma_phi: float = 1.0,
    use_std: bool = True,
    eps: float = 1e-6,
) -> Advantages:
    """SIOP (arXiv 2605.04984): potential-based shaping `gamma_phi Phi_{k+1} - Phi_k` with the
    terminal outcome mass `(1 - lam) q`, pooled z per group, then accumulated (CREDIT.md 8.2).

    `probe_BK1` holds the potential `Phi = q log(p_hat + 1e-8)`, `outcome_B` the mode mass q.
    """
    mask = batch.turn_mask_BK
    phi = require("siop", batch, "probe_BK1", "potentials", "run the Collector with probes=[SIOPProbe()]")
    check_finite("siop", "probe_BK1", phi, probe_used_BK1(batch, through_last=True))
    dt = batch.rewards_BK.dtype
    n_B = mask.sum(1)
    multi = (n_B >= 2)[:, None]
    phi = torch.where(probe_used_BK1(batch, through_last=True), phi.to(dt), 0.0)
    F = torch.where(mask & multi, gamma_phi * phi[:, 1:] - phi[:, :-1], 0.0)
    q = batch.outcome_B.to(dt)[:, None]
    r = F + torch.where(last_and_inner(batch)[1], (1 - lam) * q, 0.0)
    Z = norm_turns(r, episode_groups(batch), mask, by_index=False, use_std=use_std, eps=eps)
    return make_advantages(batch, rtg(Z, gamma))
