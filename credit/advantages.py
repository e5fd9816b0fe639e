"""The `Advantages` result, the turn -> token broadcast and batch whitening (CREDIT.md 1.4, 1.5).

`make_advantages` finishes every vectorised estimator; `make_advantages_loop` (bottom) every loop reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.group_stats import Ep
from creditgym.credit.metrics import ZERO_TOL, standard_metrics, standard_metrics_loop
from creditgym.credit.token_layout import row_blocks

__all__ = [
    "Advantages", "broadcast_loop", "broadcast_to_tokens", "make_advantages", "make_advantages_loop",
    "token_counts", "whiten_stats", "whiten_tokens_",
]  # fmt: skip


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


def _turn_index(tt: Tensor, keep: Tensor, K: int) -> Tensor:
    """int64 gather index of a row block: the token's turn where `keep`, the extra zero column K else."""
    idx = torch.where(keep, tt, K)
    return idx if idx.dtype == torch.int64 else idx.to(torch.int64)


def _count_into(w: Tensor, idx: Tensor) -> None:
    """`w[r, j] = #{t: idx[r, t] == j}` for a row block (`w` is `[R, K+1]`); consumes `idx`.

    CPU: one `bincount` over row-offset indices (several times faster than `scatter_add_`);
    elsewhere a `scatter_add_` of ones (no host sync).
    """
    R, K1 = w.shape
    if idx.device.type == "cpu":
        idx += torch.arange(0, R * K1, K1, device=idx.device)[:, None]
        w.copy_(torch.bincount(idx.view(-1), minlength=R * K1).view(R, K1))
    else:
        w.scatter_add_(1, idx, torch.ones((), dtype=w.dtype, device=w.device).expand(idx.shape))


def _broadcast(turn_BK: Tensor, token_turn_BT: Tensor, keep_BT: Tensor | None, count: bool = False) -> tuple[Tensor, Tensor | None]:
    """Block-wise `where` + `gather` into one output (CREDIT.md 1.5, 10). With `count`, also the
    number of output entries with `|x| > ZERO_TOL`, counted on each block while it is in cache."""
    B, K = turn_BK.shape
    T = token_turn_BT.shape[1]
    table = torch.cat([turn_BK, torch.zeros_like(turn_BK[:, :1])], 1)
    out = torch.empty(B, T, dtype=turn_BK.dtype, device=turn_BK.device)
    nonzero = torch.zeros((), dtype=torch.int64, device=turn_BK.device) if count else None
    for rows in row_blocks(B, T, token_turn_BT.device):
        tt = token_turn_BT[rows]
        idx = _turn_index(tt, (tt >= 0) if keep_BT is None else keep_BT[rows], K)
        o = torch.gather(table[rows], 1, idx, out=out[rows])
        if nonzero is not None:
            nonzero += torch.count_nonzero(o.abs().gt_(ZERO_TOL))
    return out, nonzero


def token_counts(batch: CreditBatch, dtype: torch.dtype) -> Tensor:
    """`w_BK`: trainable (`loss_mask_BT = 1`) tokens of every turn, as `dtype`; block-wise, no `[B, T]` temporary."""
    B, K, T = batch.B, batch.K, batch.T
    w = torch.zeros(B, K + 1, dtype=dtype, device=batch.device)
    for rows in row_blocks(B, T, batch.device):
        _count_into(w[rows], _turn_index(batch.token_turn_BT[rows], batch.loss_mask_BT[rows], K))
    return w[:, :K]


def broadcast_to_tokens(turn_BK: Tensor, token_turn_BT: Tensor, loss_mask_BT: Tensor | None) -> Tensor:
    """`token_BT[b,t] = turn_BK[b, token_turn_BT[b,t]] * loss_mask_BT[b,t]`, 0 off action tokens (1.5).

    With `loss_mask_BT=None` every action token gets its turn's value (used for value targets).
    Padding and masked tokens point at an extra zero column, so one lookup does everything; row
    blocks keep the int64 index small (see `token_layout.row_blocks`).
    """
    return _broadcast(turn_BK, token_turn_BT, loss_mask_BT)[0]


def whiten_stats(x_BT: Tensor, loss_mask_BT: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, `1 / sqrt(var + eps)` (unbiased var) over trainable tokens, and a 0/1 flag for >= 2 tokens.

    verl's `masked_whiten` (CREDIT.md 1.4); `x_BT` must already be 0 off trainable tokens. Two
    passes (mean, then squared deviations block by block), never `E[x^2] - E[x]^2`.
    """
    N = torch.count_nonzero(loss_mask_BT).to(x_BT.dtype)
    mu = x_BT.sum() / N.clamp(min=1)
    ss = torch.zeros((), dtype=x_BT.dtype, device=x_BT.device)
    for rows in row_blocks(x_BT.shape[0], x_BT.shape[1], x_BT.device):
        c = torch.where(loss_mask_BT[rows], x_BT[rows] - mu, 0.0).reshape(-1)
        ss += torch.dot(c, c)
    var = ss / (N - 1).clamp(min=1)
    return mu, torch.rsqrt(var + eps), (N > 1).to(x_BT.dtype)


def whiten_tokens_(x_BT: Tensor, loss_mask_BT: Tensor, mu: Tensor, scale: Tensor) -> Tensor:
    """In place: `(x - mu) * scale` on trainable tokens, 0 elsewhere (block-wise); returns `x_BT`."""
    zero = torch.zeros((), dtype=x_BT.dtype, device=x_BT.device)
    for rows in row_blocks(x_BT.shape[0], x_BT.shape[1], x_BT.device):
        x = x_BT[rows]
        torch.where(loss_mask_BT[rows], (x - mu).mul_(scale), zero, out=x)
    return x_BT


def _masked_tokens(x_BT: Tensor, loss_mask_BT: Tensor, copy: bool) -> tuple[Tensor, Tensor]:
    """`where(loss_mask, x, 0)` (a new tensor when `copy`, else `x_BT` itself, already masked) and
    the count of its entries with `|x| > ZERO_TOL`, block by block."""
    out = torch.empty_like(x_BT) if copy else x_BT
    zero = torch.zeros((), dtype=x_BT.dtype, device=x_BT.device)
    nonzero = torch.zeros((), dtype=torch.int64, device=x_BT.device)
    for rows in row_blocks(x_BT.shape[0], x_BT.shape[1], x_BT.device):
        o = out[rows]
        if copy:
            torch.where(loss_mask_BT[rows], x_BT[rows], zero, out=o)
        nonzero += torch.count_nonzero(o.abs().gt_(ZERO_TOL))
    return out, nonzero


def make_advantages(
    batch: CreditBatch,
    turn_BK: Tensor,
    token_BT: Tensor | None = None,
    extras: Mapping[str, Tensor | float] | None = None,
    *,
    clip_scale_BK: Tensor | None = None,
    returns_BK: Tensor | None = None,
    returns_BT: Tensor | None = None,
    w_BK: Tensor | None = None,
    token_masked: bool = False,
) -> Advantages:
    """Zero the padding, broadcast turns to tokens when `token_BT` is None, add the metrics (1.6).

    `extras` are the estimator's own metrics (0-dim tensors or floats, keys namespaced by the
    estimator); they are copied to the host together with the standard metrics, in one transfer.
    `w_BK` reuses the `token_counts` an estimator already computed. `token_masked=True` says a given
    `token_BT` is the estimator's own tensor and already 0 where `loss_mask_BT` is 0, so it is used
    as it is (no masked copy); by default a given `token_BT` is copied and masked.
    """
    mask_BK = batch.turn_mask_BK
    turn_BK = torch.where(mask_BK, turn_BK, torch.zeros_like(turn_BK))
    if token_BT is None and w_BK is not None:
        token_BT, _ = _broadcast(turn_BK, batch.token_turn_BT, batch.loss_mask_BT)
        w = w_BK.to(turn_BK.dtype)
        zero_tokens = (w * (turn_BK.abs() <= ZERO_TOL)).sum() / w.sum().clamp(min=1)
    else:
        if token_BT is None:
            token_BT, nonzero = _broadcast(turn_BK, batch.token_turn_BT, batch.loss_mask_BT, count=True)
        else:
            token_BT, nonzero = _masked_tokens(token_BT, batch.loss_mask_BT, copy=not token_masked)
        n = torch.count_nonzero(batch.loss_mask_BT)
        zero_tokens = (n - nonzero).to(turn_BK.dtype) / n.clamp(min=1).to(turn_BK.dtype)
    if clip_scale_BK is not None:
        clip_scale_BK = torch.where(mask_BK, clip_scale_BK, torch.ones_like(clip_scale_BK))
    if returns_BK is not None:
        returns_BK = torch.where(mask_BK, returns_BK, torch.zeros_like(returns_BK))
    metrics = standard_metrics(batch, turn_BK, zero_tokens, extras or {})
    return Advantages(turn_BK, token_BT, metrics, clip_scale_BK, returns_BK, returns_BT)


def broadcast_loop(eps_: list[Ep], turn: list[list[float]]) -> list[list[float]]:
    """`broadcast_to_tokens` (CREDIT.md 1.5) by loops."""
    return [[turn[e.b][k] if k >= 0 and e.loss[t] else 0.0 for t, k in enumerate(e.tok_turn)] for e in eps_]


def make_advantages_loop(
    batch: CreditBatch,
    eps_: list[Ep],
    turn: list[list[float]],
    token: list[list[float]] | None = None,
    extras: dict[str, float] | None = None,
    **optional: list[list[float]] | None,
) -> Advantages:
    """`make_advantages` by loops: zero the padding, broadcast, the metrics, tensors like the batch's."""
    turn = [[turn[e.b][k] if k < e.n else 0.0 for k in range(batch.K)] for e in eps_]
    if token is None:
        token = broadcast_loop(eps_, turn)
    else:
        token = [[x if e.loss[t] else 0.0 for t, x in enumerate(token[e.b])] for e in eps_]
    metrics = standard_metrics_loop(eps_, turn, token)
    metrics.update(extras or {})
    dt, dev = batch.rewards_BK.dtype, batch.device

    def tens(x: list[list[float]] | None) -> Tensor | None:
        return None if x is None else torch.tensor(x, dtype=dt, device=dev)

    kw = {name: tens(v) for name, v in optional.items()}
    return Advantages(tens(turn), tens(token), metrics, **kw)  # type: ignore[arg-type]
