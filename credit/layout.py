"""Per-turn token counts and episode-group helpers that several estimator families share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.ops import dense_ids, loo_baseline, normalize

__all__ = [
    "EpisodeGroups",
    "TokenLayout",
    "episode_groups",
    "group_loo",
    "group_z",
    "token_layout",
    "whiten_turns",
]


@dataclass(frozen=True)
class TokenLayout:
    """Where each turn's action tokens sit in the token rows (all `[B, K]`, int64).

    `first_BK`: position of turn k's first action token (clamped to T-1 at padding);
    `act_before_BK`: action tokens before turn k; `m_BK`: action tokens of turn k;
    `w_BK`: trainable (`loss_mask_BT = 1`) tokens of turn k. 0 at padded turns.
    """

    first_BK: Tensor
    act_before_BK: Tensor
    m_BK: Tensor
    w_BK: Tensor


def _first_action_flags(token_turn_BT: Tensor) -> Tensor:
    act = token_turn_BT >= 0
    first = act.clone()
    first[:, 1:] &= token_turn_BT[:, 1:] != token_turn_BT[:, :-1]
    return first


def _per_turn_counts(flag_BT: Tensor, first_BK: Tensor, mask_BK: Tensor) -> tuple[Tensor, Tensor]:
    """Count of `flag` tokens before each turn's first action token, and within each turn."""
    cum = flag_BT.cumsum(1, dtype=torch.int32)
    total = cum[:, -1:].to(torch.int64)
    at = cum.gather(1, first_BK).to(torch.int64) - flag_BT.gather(1, first_BK).to(torch.int64)
    del cum
    before = torch.where(mask_BK, at, total)
    within = torch.cat([before[:, 1:], total], 1) - before
    return before, within


def token_layout(batch: CreditBatch) -> TokenLayout:
    """Turn boundaries from `token_turn_BT` with int32 scans and one `searchsorted` (no episode loop).

    Action tokens of a turn are contiguous and turns appear in order, so the running count of
    "first action token of a turn" flags is each token's turn index, and `searchsorted` finds the
    first token of every turn.
    """
    tt = batch.token_turn_BT
    B, T = tt.shape
    K = batch.K
    mask_BK = batch.turn_mask_BK
    first = _first_action_flags(tt)
    turn_idx = first.cumsum(1, dtype=torch.int32) - 1
    del first
    ks = torch.arange(K, device=tt.device, dtype=torch.int32).expand(B, K).contiguous()
    pos = torch.searchsorted(turn_idx, ks).clamp(max=T - 1)
    del turn_idx
    act_before, m = _per_turn_counts(tt >= 0, pos, mask_BK)
    _, w = _per_turn_counts(batch.loss_mask_BT, pos, mask_BK)
    return TokenLayout(pos, act_before, m, w)


def whiten_turns(x_BK: Tensor, w_BK: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor, Tensor]:
    """Batch whitening stats of values constant over each turn's tokens (CREDIT.md 1.4).

    `w_BK` counts how often a turn's value appears (trainable tokens for stats="token", the turn
    mask for stats="turn"). Returns mean, `1/sqrt(var + eps)` (unbiased) and a flag for >= 2 counts.
    """
    w = w_BK.to(x_BK.dtype)
    N = w.sum()
    has = w > 0
    ref = torch.where(has, x_BK, float("-inf")).amax() if x_BK.numel() else torch.zeros((), dtype=x_BK.dtype)
    ref = torch.where(torch.isfinite(ref), ref, torch.zeros_like(ref))
    d = torch.where(has, x_BK - ref, 0.0)
    mu = ref + (w * d).sum() / N.clamp(min=1)
    c = torch.where(has, x_BK - mu, 0.0)
    var = (w * c * c).sum() / (N - 1).clamp(min=1)
    return mu, torch.rsqrt(var + eps), (N > 1).to(x_BK.dtype)


@dataclass(frozen=True)
class EpisodeGroups:
    """Dense group ids `g_B` (0..G-1) and the membership weight `has_B` (episodes with turns)."""

    g_B: Tensor
    G: int
    has_B: Tensor


def episode_groups(batch: CreditBatch) -> EpisodeGroups:
    g_B, G = dense_ids(batch.group_B)
    return EpisodeGroups(g_B, G, batch.turn_mask_BK.any(1))


def group_z(
    x_B: Tensor,
    eg: EpisodeGroups,
    *,
    use_std: bool = True,
    eps: float = 1e-6,
    singleton: str = "raw",
    w_B: Tensor | None = None,
) -> Tensor:
    """`z(x; G(b))` (or `center` without `use_std`) with the episode-group singleton rule (1.2)."""
    w = eg.has_B.to(x_B.dtype) if w_B is None else w_B
    return normalize(x_B, eg.g_B, w, eg.G, use_std=use_std, eps=eps, singleton=singleton)


def group_loo(x_B: Tensor, eg: EpisodeGroups, singleton: str = "raw") -> Tensor:
    """`x - mean(others in G(b))`; a singleton gives `x` ("raw") or 0 ("zero")."""
    base, single = loo_baseline(x_B, eg.g_B, eg.has_B.to(x_B.dtype), eg.G)
    out = x_B - base
    if singleton == "zero":
        out = torch.where(single, torch.zeros_like(out), out)
    return torch.where(eg.has_B, out, torch.zeros_like(out))

