"""Information gain and potentials: `igpo` and `siop` (CREDIT.md section 8)."""

from __future__ import annotations

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import Advantages, make_advantages
from creditgym.credit.layout import episode_groups
from creditgym.credit.ops import flat_group_BK, normalize, rtg
from creditgym.credit.registry import check_choice, check_finite, register_estimator, require
from creditgym.credit.turn import info_gain_BK, norm_turns, probe_used_BK1

__all__ = ["igpo", "siop"]


def _last_mask(batch: CreditBatch) -> Tensor:
    n_B = batch.turn_mask_BK.sum(1)
    return torch.arange(batch.K, device=batch.device)[None, :] == (n_B[:, None] - 1)


@register_estimator("igpo", needs={"probe": "gold"})
def igpo(
    batch: CreditBatch, *, gamma: float = 1.0, norm: str = "joint", use_std: bool = True, eps: float = 1e-6
) -> Advantages:
    """IGPO (arXiv 2510.14967): information-gain turn rewards (gold-answer probability gains), the
    outcome on the last turn, group-normalised jointly or separately, then accumulated (8.1)."""
    check_choice("igpo", "norm", norm, ("joint", "separate"))
    mask = batch.turn_mask_BK
    IG, inner = info_gain_BK("igpo", batch)
    last = _last_mask(batch)
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


@register_estimator("siop", needs={"probe": "siop", "outcome_key": "siop_q"})
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
    r = F + torch.where(_last_mask(batch), (1 - lam) * q, 0.0)
    Z = norm_turns(r, episode_groups(batch), mask, by_index=False, use_std=use_std, eps=eps)
    return make_advantages(batch, rtg(Z, gamma))
