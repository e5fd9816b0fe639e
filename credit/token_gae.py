"""Token-level GAE over action tokens, block by block in a chunk-major layout (CREDIT.md 3, 10).

Schulman et al., arXiv 1506.02438: `delta_t = r_t + gamma V(next action token) - V_t` and
`A_t = delta_t + gamma lam A(next action token)`, observation tokens skipped. Over all T slots this
is one linear recurrence `A_t = d_t + c_t A_(t+1)` with `c = gamma lam` on action tokens and 1 on
observation tokens (they carry A through unchanged), solved by `reverse_linear_scan_` (below).
"""

from __future__ import annotations

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.token_layout import row_blocks

__all__ = [
    "CHUNK", "GAE_BLOCK_ELEMS", "chunk_major", "reverse_linear_scan", "reverse_linear_scan_",
    "token_gae_block", "token_level", "turn_edges",
]  # fmt: skip

CHUNK = 64  # positions per scan chunk (CREDIT.md 10)
GAE_BLOCK_ELEMS = 1 << 20  # token slots per row block on CPU: fewer, larger blocks amortise the scan loops


# ---------------------------------------------------------------- the chunked reverse linear scan
def chunk_major(x_RT: Tensor, L: int) -> Tensor:
    """The `[L, R, T/L]` view (no copy) of a row-contiguous `[R, T]` tensor: offset j within chunk,
    row, chunk index. Elementwise ops with such views read or write row-major data in the layout
    of `reverse_linear_scan_` without a separate transpose copy. Needs `T % L == 0`."""
    R, T = x_RT.shape
    return x_RT.view(R, T // L, L).permute(2, 0, 1)


def reverse_linear_scan_(d: Tensor, c: Tensor) -> Tensor:
    """In place on contiguous `[L, R, nC]` (see `chunk_major`): `A_t = d_t + c_t A_(t+1)` along the
    position `t = chunk * L + offset` of every row, with `A = 0` after the last position.

    Two levels (CREDIT.md 10): a loop over the L offsets (all rows and chunks at once) gives each
    position's value for a zero carry and the product of the `c` to its chunk's end (left in `c`);
    a loop over the chunks carries the true value at each chunk start backwards; one `addcmul`
    adds the carries. `L + nC` vector steps instead of `L * nC`; only multiplications and
    additions, no division, so `c` may hold zeros (restarts). Returns `d`, now holding A.
    """
    L, R, nC = d.shape
    for j in range(L - 2, -1, -1):
        d[j].addcmul_(c[j], d[j + 1])
        c[j].mul_(c[j + 1])
    start = torch.empty(nC, R, dtype=d.dtype, device=d.device)  # a copy, never a view (R = 1!)
    start.copy_(d[0].T)  # value at each chunk start for a zero carry
    prod = c[0].T
    for i in range(nC - 2, -1, -1):
        start[i].addcmul_(prod[i], start[i + 1])
    carry = torch.zeros(R, nC, dtype=d.dtype, device=d.device)
    carry[:, :-1] = start[1:].T
    return d.addcmul_(c, carry)


def reverse_linear_scan(d_RT: Tensor, c_RT: Tensor, chunk: int = 64) -> Tensor:
    """`A[:, t] = d[:, t] + c[:, t] * A[:, t+1]` with `A[:, T] = 0`, for every row at once (a new
    tensor; the inputs are not modified). Chunked as `reverse_linear_scan_` describes."""
    R, T = d_RT.shape
    if R == 0 or T == 0:
        return torch.zeros_like(d_RT)
    L = max(1, min(chunk, T))
    pad = -T % L
    d = torch.nn.functional.pad(d_RT, (0, pad))
    c = torch.nn.functional.pad(c_RT, (0, pad))
    A = reverse_linear_scan_(chunk_major(d, L).contiguous(), chunk_major(c, L).contiguous())
    return A.permute(1, 2, 0).reshape(R, T + pad)[:, :T]


# ---------------------------------------------------------------- token GAE of a row block, of a batch
def turn_edges(token_turn_BT: Tensor) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """(b, t, k) of the first and of the last token of every run of equal action-token turns, by
    `nonzero` (no episode loop); a turn's action tokens are one run when they are contiguous."""
    act = token_turn_BT >= 0
    change = token_turn_BT[:, 1:] != token_turn_BT[:, :-1]
    first, last = act.clone(), act
    first[:, 1:] &= change
    last[:, :-1] &= change
    out = []
    for flag in (first, last):
        b, t = flag.nonzero(as_tuple=True)
        out.append((b, t, token_turn_BT[b, t].to(torch.int64)))
    return out[0], out[1]


def _pad(x: Tensor, pad: int, value: float | bool) -> Tensor:
    return torch.cat([x, x.new_full((x.shape[0], pad), value)], 1) if pad else x


def token_gae_block(
    token_turn_RT: Tensor,
    v_RT: Tensor,
    loss_mask_RT: Tensor,
    r_RK: Tensor,
    boot_R: Tensor,
    gamma: float,
    lam: float,
    restart_each_turn: bool,
    token_out_RT: Tensor,
    returns_out_RT: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """GAE of a row block: writes A on trainable tokens (0 elsewhere) into `token_out_RT` and A + V
    on action tokens (0 elsewhere) into `returns_out_RT` (both row-contiguous).

    `r_RK[b,k]` sits on turn k's last action token, `boot_R` is the value after the episode's last
    one. With `restart_each_turn` the next value and the running advantage are 0 after each turn's
    last token (hierarchical inner GAE: `c = 0` there). Returns (b, k, A, A + V) at every turn's
    first action token.
    """
    R, T = token_turn_RT.shape
    L = min(CHUNK, T)
    pad = -T % L
    tt, v, lm = _pad(token_turn_RT, pad, -1), _pad(v_RT, pad, 0.0), _pad(loss_mask_RT, pad, False)
    tok = torch.empty_like(v) if pad else token_out_RT
    ret = torch.empty_like(v) if pad else returns_out_RT
    (bf, tf, kf), (bl, tl, kl) = turn_edges(tt)
    n = bl.numel()
    same_row = torch.zeros(n, dtype=torch.bool, device=bl.device)
    same_row[:-1] = bf[1:] == bl[:-1]
    same_turn = same_row.clone()  # the next run continues this run's turn (a gap inside a turn)
    same_turn[:-1] &= kf[1:] == kl[:-1]
    end = ~same_turn
    start = torch.ones_like(end)
    start[1:] = ~same_turn[:-1]
    v_after = torch.zeros_like(v[bl, tl])  # value of the next action token after each run
    v_after[:-1] = v[bf[1:], tf[1:]]
    v_after = torch.where(same_row, v_after, boot_R[bl])
    if restart_each_turn:
        v_after = torch.where(end, torch.zeros_like(v_after), v_after)
    r_end = torch.where(end, r_RK[bl, kl], torch.zeros_like(v_after))
    obs_RT = tt < 0
    # the chunk-major layout of the scan: one strided copy in (values, observation flags), one out
    vC = chunk_major(v, L).contiguous()
    obs = chunk_major(obs_RT, L).contiguous()
    d = torch.empty_like(vC)
    torch.mul(vC[1:], gamma, out=d[:-1])  # gamma * V_(t+1), inside a run
    torch.mul(vC[0, :, 1:], gamma, out=d[-1, :, :-1])
    d[-1, :, -1] = 0.0
    d.sub_(vC)
    del vC
    d[tl % L, bl, tl // L] = r_end + gamma * v_after - v[bl, tl]  # each run's last token
    d.masked_fill_(obs, 0.0)
    one = torch.ones((), dtype=d.dtype, device=d.device)
    c = torch.where(obs, one, torch.full((), gamma * lam, dtype=d.dtype, device=d.device))
    del obs
    if restart_each_turn:
        te = tl[end]
        c[te % L, bl[end], te // L] = 0.0
    A = reverse_linear_scan_(d, c)
    del c
    bs, ts = bf[start], tf[start]
    A_first = A[ts % L, bs, ts // L]
    ret_first = A_first + v[bs, ts]
    A = A.permute(1, 2, 0).reshape(R, T + pad)
    zero = torch.zeros((), dtype=v.dtype, device=v.device)
    torch.where(lm, A, zero, out=tok)
    torch.where(obs_RT, zero, A.add_(v), out=ret)
    if pad:
        token_out_RT.copy_(tok[:, :T])
        returns_out_RT.copy_(ret[:, :T])
    return bs, kf[start], A_first, ret_first


def token_level(
    batch: CreditBatch, v_BT: Tensor, r_BK: Tensor, boot_B: Tensor, gamma: float, lam: float, restart: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Token GAE of the whole batch, block by block: `token_BT` (A on trainable tokens, else 0),
    `returns_BT` (A + V on action tokens, else 0), and A and A + V at each turn's first action
    token (`[B, K]`, 0 at turns without action tokens)."""
    B, T = v_BT.shape
    token_BT = torch.zeros_like(v_BT) if T == 0 else torch.empty_like(v_BT)
    returns_BT = torch.empty_like(token_BT)
    first_BK = torch.zeros_like(r_BK)
    first_ret_BK = torch.zeros_like(r_BK)
    if T == 0:
        return token_BT, returns_BT, first_BK, first_ret_BK
    for rows in row_blocks(B, T, v_BT.device, GAE_BLOCK_ELEMS):
        b, k, a, g = token_gae_block(
            batch.token_turn_BT[rows], v_BT[rows], batch.loss_mask_BT[rows], r_BK[rows], boot_B[rows],
            gamma, lam, restart, token_BT[rows], returns_BT[rows],
        )  # fmt: skip
        first_BK[rows][b, k] = a
        first_ret_BK[rows][b, k] = g
    return token_BT, returns_BT, first_BK, first_ret_BK
