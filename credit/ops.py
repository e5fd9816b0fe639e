"""Vectorised building blocks shared by the estimators (design/CREDIT.md sections 1.2 and 10).

Every function is pure and works on any device and float dtype. Segment statistics follow
CREDIT.md 10: counts and sums by `index_add_`, a second pass for the squared deviations (never
`E[x^2] - E[x]^2`). Deviations are taken from a per-segment reference member (the segment minimum),
so a set of equal values gives exactly 0 (CREDIT.md 1.2: "a zero-variance set gives exactly 0").
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "SegStats",
    "dense_ids",
    "flat_group_BK",
    "loo_baseline",
    "chunk_major",
    "normalize",
    "reverse_linear_scan",
    "reverse_linear_scan_",
    "row_blocks",
    "rtg",
    "segment_stats",
    "suffix_min",
]

SINGLETON_RULES = ("raw", "zero")

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


def dense_ids(key: Tensor) -> tuple[Tensor, int]:
    """Map arbitrary int ids to dense ids 0..S-1 (same shape as `key`) and return S."""
    uniq, inv = torch.unique(key, return_inverse=True)
    return inv.reshape(key.shape), int(uniq.numel())


def flat_group_BK(g_B: Tensor, k_or_state_BK: Tensor) -> tuple[Tensor, int]:
    """Dense ids of the composite key (group, k or state) for every (b, k) slot, flattened."""
    other = k_or_state_BK.clamp(min=0)
    width = int(other.max()) + 1 if other.numel() else 1
    key = g_B[:, None].to(torch.int64) * width + other.to(torch.int64)
    return dense_ids(key.reshape(-1))


class SegStats(NamedTuple):
    """Per-member deviations and per-segment statistics of a weighted multiset."""

    d: Tensor  # x - ref[seg]      (0 for members with weight 0)
    c: Tensor  # x - mean[seg]
    cnt: Tensor  # [S] total weight
    s_d: Tensor  # [S] weighted sum of d
    ss: Tensor  # [S] weighted sum of c^2
    ref: Tensor  # [S] reference member (segment minimum)


def segment_stats(x_N: Tensor, seg_N: Tensor, w_N: Tensor, S: int) -> SegStats:
    """Weighted segment statistics of `x_N` (members with `w_N = 0` are ignored)."""
    member_N = w_N > 0
    w_N = w_N.to(x_N.dtype)
    inf = torch.full((S,), float("inf"), dtype=x_N.dtype, device=x_N.device)
    ref_S = inf.scatter_reduce(0, seg_N, torch.where(member_N, x_N, float("inf")), "amin")
    ref_S = torch.where(torch.isfinite(ref_S), ref_S, torch.zeros_like(ref_S))
    d_N = torch.where(member_N, x_N - ref_S[seg_N], torch.zeros_like(x_N))
    zeros = torch.zeros(S, dtype=x_N.dtype, device=x_N.device)
    cnt_S = zeros.index_add(0, seg_N, w_N)
    s_S = zeros.index_add(0, seg_N, w_N * d_N)
    mean_d_S = s_S / cnt_S.clamp(min=1)
    c_N = torch.where(member_N, d_N - mean_d_S[seg_N], torch.zeros_like(x_N))
    ss_S = zeros.index_add(0, seg_N, w_N * c_N * c_N)
    return SegStats(d_N, c_N, cnt_S, s_S, ss_S, ref_S)


def normalize(
    x_N: Tensor,
    seg_N: Tensor,
    w_N: Tensor,
    S: int,
    *,
    use_std: bool = True,
    eps: float = 1e-6,
    singleton: str = "zero",
    population: bool = False,
) -> Tensor:
    """`z(x; S)` or `center(x; S)` of CREDIT.md 1.2 for every member; 0 for non-members.

    `singleton="raw"` (episode groups only): a set of total weight 1 gives baseline 0 and scale 1,
    i.e. `x / (1 + eps)` with `use_std` and `x` without. `"zero"`: such a set gives 0. Unbiased std
    (divide by `cnt - 1`) unless `population`.
    """
    st = segment_stats(x_N, seg_N, w_N, S)
    cnt_N = st.cnt[seg_N]
    out = st.c
    if use_std:
        denom_S = st.cnt if population else (st.cnt - 1)
        std_S = torch.sqrt(st.ss / denom_S.clamp(min=1)) * (st.cnt > 1)
        out = st.c / (std_S[seg_N] + eps)
    single_N = cnt_N == 1
    if singleton == "raw":
        raw = x_N / (1 + eps) if use_std else x_N
        out = torch.where(single_N, raw, out)
    else:
        out = torch.where(single_N, torch.zeros_like(out), out)
    return torch.where(w_N > 0, out, torch.zeros_like(out))


def loo_baseline(x_N: Tensor, seg_N: Tensor, w_N: Tensor, S: int) -> tuple[Tensor, Tensor]:
    """Leave-one-out mean of the other members and a flag for members of a set of one.

    Returns `(base_N, single_N)`; `base_N` is 0 for singletons and non-members.
    """
    st = segment_stats(x_N, seg_N, w_N, S)
    cnt_N = st.cnt[seg_N]
    others = (cnt_N - 1).clamp(min=1)
    base_N = st.ref[seg_N] + (st.s_d[seg_N] - st.d) / others
    single_N = cnt_N <= 1
    base_N = torch.where(single_N | (w_N <= 0), torch.zeros_like(base_N), base_N)
    return base_N, single_N


def discount_matrix(K: int, gamma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """`D[k, j] = gamma^(j-k)` for j >= k, else 0 (CREDIT.md 10)."""
    k = torch.arange(K, device=device)
    diff = (k[None, :] - k[:, None]).to(dtype)
    D = torch.pow(torch.tensor(gamma, dtype=dtype, device=device), diff.clamp(min=0))
    return torch.where(diff >= 0, D, torch.zeros_like(D))


def rtg(x_BK: Tensor, gamma: float) -> Tensor:
    """Discounted return-to-go `RTG_g(x)[b,k] = sum_{j>=k} g^(j-k) x[b,j]` (padding must be 0)."""
    D = discount_matrix(x_BK.shape[1], gamma, x_BK.dtype, x_BK.device)
    return x_BK @ D.T


def suffix_min(x_BK: Tensor, mask_BK: Tensor) -> Tensor:
    """`min_{j=k}^{n_b-1} x[b,j]` at valid slots (0 at padding): flip, cummin, flip."""
    inf = torch.full_like(x_BK, float("inf"))
    y = torch.where(mask_BK, x_BK, inf).flip(1).cummin(1).values.flip(1)
    return torch.where(mask_BK, y, torch.zeros_like(y))


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
