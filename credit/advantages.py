"""The `Advantages` result, the turn -> token broadcast and batch whitening (CREDIT.md 1.4, 1.5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.metrics import ZERO_TOL, standard_metrics

__all__ = [
    "Advantages",
    "TokenIndex",
    "broadcast_to_tokens",
    "make_advantages",
    "token_index",
    "whiten_stats",
]


@dataclass(frozen=True)
class Advantages:
    """What every estimator returns (CREDIT.md 1.4).

    `turn_BK` is 0 at padded turns; `token_BT` is 0 where `token_turn_BT < 0` or `loss_mask_BT == 0`.
    `clip_scale_BK` (a2tgpo) multiplies both clip bounds of turn k's tokens (METHODS.md 1.2);
    `returns_BK` / `returns_BT` (gae) are value targets A + V before any whitening.
    """

    turn_BK: Tensor
    token_BT: Tensor
    metrics: dict[str, float]
    clip_scale_BK: Tensor | None = None
    returns_BK: Tensor | None = None
    returns_BT: Tensor | None = None


@dataclass(frozen=True)
class TokenIndex:
    """Where each token's advantage comes from: its turn k when trainable, an extra zero column K
    otherwise. int64 `token_turn_BT` (what packing produces) gives a row index for `gather`
    (`flat=False`); int32 stays int32 as a flat index `b * (K+1) + k` for an embedding lookup,
    which accepts int32 (`flat=True`). `w_BK`: trainable tokens per turn (float)."""

    idx_BT: Tensor
    flat: bool
    w_BK: Tensor


def _index(token_turn_BT: Tensor, keep_BT: Tensor, K: int) -> tuple[Tensor, bool]:
    idx = torch.where(keep_BT, token_turn_BT, K)
    if idx.dtype == torch.int64:
        return idx, False
    B = token_turn_BT.shape[0]
    return idx.add_(torch.arange(B, device=idx.device, dtype=idx.dtype)[:, None] * (K + 1)), True


def token_index(batch: CreditBatch, dtype: torch.dtype) -> TokenIndex:
    """One `where` and one scatter of ones over the tokens; shared by broadcast, whitening, metrics."""
    K, B = batch.K, batch.B
    idx, flat = _index(batch.token_turn_BT, batch.loss_mask_BT, K)
    ones = torch.ones((), dtype=dtype, device=idx.device)
    if flat:
        w = torch.zeros(B * (K + 1), dtype=dtype, device=idx.device)
        w = w.index_add_(0, idx.view(-1), ones.expand(idx.numel())).view(B, K + 1)
    else:
        w = torch.zeros(B, K + 1, dtype=dtype, device=idx.device).scatter_add_(1, idx, ones.expand(idx.shape))
    return TokenIndex(idx, flat, w[:, :K])


def _lookup(turn_BK: Tensor, idx_BT: Tensor, flat: bool) -> Tensor:
    table = torch.cat([turn_BK, torch.zeros_like(turn_BK[:, :1])], 1)
    if flat:
        return F.embedding(idx_BT, table.reshape(-1, 1)).view(idx_BT.shape)
    return table.gather(1, idx_BT)


def broadcast_to_tokens(turn_BK: Tensor, token_turn_BT: Tensor, loss_mask_BT: Tensor | None) -> Tensor:
    """`token_BT[b,t] = turn_BK[b, token_turn_BT[b,t]] * loss_mask_BT[b,t]`, 0 off action tokens (1.5).

    With `loss_mask_BT=None` every action token gets its turn's value (used for value targets).
    Padding and masked tokens point at an extra zero column, so one lookup does everything.
    """
    keep = (token_turn_BT >= 0) if loss_mask_BT is None else loss_mask_BT
    return _lookup(turn_BK, *_index(token_turn_BT, keep, turn_BK.shape[1]))


def whiten_stats(x_BT: Tensor, loss_mask_BT: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, `1 / sqrt(var + eps)` (unbiased var) over trainable tokens, and a 0/1 flag for >= 2 tokens.

    verl's `masked_whiten` (CREDIT.md 1.4); `x_BT` must already be 0 off trainable tokens. Two
    passes (mean, then squared deviations), never `E[x^2] - E[x]^2`.
    """
    N = torch.count_nonzero(loss_mask_BT).to(x_BT.dtype)
    mu = x_BT.sum() / N.clamp(min=1)
    c = torch.where(loss_mask_BT, x_BT - mu, 0.0).view(-1)
    var = torch.dot(c, c) / (N - 1).clamp(min=1)
    return mu, torch.rsqrt(var + eps), (N > 1).to(x_BT.dtype)


def make_advantages(
    batch: CreditBatch,
    turn_BK: Tensor,
    token_BT: Tensor | None = None,
    extras: Mapping[str, Tensor | float] | None = None,
    *,
    clip_scale_BK: Tensor | None = None,
    returns_BK: Tensor | None = None,
    returns_BT: Tensor | None = None,
    tix: TokenIndex | None = None,
) -> Advantages:
    """Zero the padding, broadcast turns to tokens when `token_BT` is None, add the metrics (1.6).

    `extras` are the estimator's own metrics (0-dim tensors or floats, keys namespaced by the
    estimator); they are copied to the host together with the standard metrics, in one transfer.
    `tix` reuses a `token_index` the estimator already built.
    """
    mask_BK = batch.turn_mask_BK
    turn_BK = torch.where(mask_BK, turn_BK, torch.zeros_like(turn_BK))
    if token_BT is None:
        tix = tix if tix is not None else token_index(batch, turn_BK.dtype)
        token_BT = _lookup(turn_BK, tix.idx_BT, tix.flat)
        w = tix.w_BK
        zero_tokens = (w * (turn_BK.abs() <= ZERO_TOL)).sum() / w.sum().clamp(min=1)
    else:
        token_BT = torch.where(batch.loss_mask_BT, token_BT, 0.0)
        n = torch.count_nonzero(batch.loss_mask_BT)
        nonzero = torch.count_nonzero(token_BT.abs() > ZERO_TOL)
        zero_tokens = (n - nonzero).to(turn_BK.dtype) / n.clamp(min=1).to(turn_BK.dtype)
    if clip_scale_BK is not None:
        clip_scale_BK = torch.where(mask_BK, clip_scale_BK, torch.ones_like(clip_scale_BK))
    if returns_BK is not None:
        returns_BK = torch.where(mask_BK, returns_BK, torch.zeros_like(returns_BK))
    metrics = standard_metrics(batch, turn_BK, zero_tokens, extras or {})
    return Advantages(turn_BK, token_BT, metrics, clip_scale_BK, returns_BK, returns_BT)
