"""Where each turn's tokens sit in the token rows, and the row blocks of `[B, T]` work (CREDIT.md 10)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from creditgym.batch import CreditBatch

__all__ = ["CPU_BLOCK_ELEMS", "TokenLayout", "row_blocks", "token_layout"]

# Elements per row block of `[B, T]` work on CPU: an int64 block is 1 MB (fits L2). Every fresh `[B, T]`
# tensor costs page faults on first touch (glibc maps each large allocation anew), more than the
# arithmetic itself, so token-level work runs block by block and writes into its outputs.
CPU_BLOCK_ELEMS = 1 << 17


def row_blocks(B: int, T: int, device: torch.device, elems: int | None = None) -> list[slice]:
    """Row slices covering `[0, B)` for block-wise `[B, T]` work (CREDIT.md 10).

    On CPU each block holds about `elems` (default `CPU_BLOCK_ELEMS`) token slots, so temporaries stay small and are
    reused by the allocator; on accelerators (caching allocators) the whole batch is one block.
    A loop over a handful of row blocks, never over episodes.
    """
    if device.type != "cpu":
        return [slice(0, B)] if B else []
    R = max(1, (CPU_BLOCK_ELEMS if elems is None else elems) // max(T, 1))
    return [slice(s, min(B, s + R)) for s in range(0, B, R)]


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
