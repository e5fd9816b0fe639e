"""Group and segment statistics shared by the estimators (CREDIT.md 1.2, 10), and their loop twins.

Vectorised: segment statistics by `index_add_` with a second pass for the squared deviations (never
`E[x^2] - E[x]^2`), deviations taken from a per-segment reference member (the segment minimum), so a
set of equal values gives exactly 0 ("a zero-variance set gives exactly 0"). Loop twins (bottom):
the batch as Python lists (`Ep`) and `mean`, `std`, `z` over lists, used by the loop references.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from creditgym.batch import CreditBatch

__all__ = [
    "SINGLETON_RULES", "Ep", "EpisodeGroups", "SegStats", "dense_ids", "episode_groups", "episodes_of",
    "flat_group_BK", "group_loo", "group_z", "groups_of", "loo", "loo_baseline", "mean", "normalize",
    "segment_stats", "std", "whiten_turns", "z",
]  # fmt: skip

SINGLETON_RULES = ("raw", "zero")


# ---------------------------------------------------------------- segment statistics
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


# ---------------------------------------------------------------- episode groups and batch whitening
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


# ---------------------------------------------------------------- loop twins (CREDIT.md 9.1)
@dataclass
class Ep:
    """One episode of a batch as Python lists (valid turns only, tokens in slot order)."""

    b: int
    g: int
    n: int
    truncated: bool
    R: float
    r: list[float]
    state: list[int]
    node: list[int]
    probe: list[float] | None
    values: list[float] | None  # all K slots (the bootstrap column included)
    greedy: float | None
    tok_turn: list[int]
    loss: list[bool]
    tok_values: list[float] | None
    logprobs: list[float] | None

    def action_tokens(self) -> list[tuple[int, int]]:
        """(token slot, turn) of every action token."""
        return [(t, k) for t, k in enumerate(self.tok_turn) if k >= 0]


def _rows(x: torch.Tensor | None) -> list[Any] | None:
    return None if x is None else x.detach().cpu().double().tolist()


def episodes_of(batch: CreditBatch, token_values: bool = False, logprobs: bool = False) -> list[Ep]:
    """The batch as Python lists; `[B, T]` float rows are converted only when asked for."""
    n_B = batch.turn_mask_BK.sum(1).tolist()
    names = ["rewards_BK", "outcome_B", "probe_BK1", "values_BK", "greedy_return_B"]
    names += ["token_values_BT"] * token_values + ["logprobs_BT"] * logprobs
    rows = {name: _rows(getattr(batch, name)) for name in names}
    ids = {name: getattr(batch, name).tolist() for name in ("group_B", "state_BK", "node_BK", "token_turn_BT")}
    loss = batch.loss_mask_BT.tolist()
    trunc = batch.truncated_B.tolist()
    out = []
    for b in range(batch.B):
        n = int(n_B[b])

        def row(name: str, b: int = b) -> Any:
            r = rows.get(name)
            return None if r is None else r[b]

        out.append(
            Ep(
                b=b,
                g=int(ids["group_B"][b]),
                n=n,
                truncated=bool(trunc[b]),
                R=row("outcome_B"),
                r=row("rewards_BK")[:n],
                state=ids["state_BK"][b][:n],
                node=ids["node_BK"][b][:n],
                probe=row("probe_BK1"),
                values=row("values_BK"),
                greedy=row("greedy_return_B"),
                tok_turn=ids["token_turn_BT"][b],
                loss=[bool(x) for x in loss[b]],
                tok_values=row("token_values_BT"),
                logprobs=row("logprobs_BT"),
            )
        )
    return out


def groups_of(eps_: list[Ep]) -> dict[int, list[Ep]]:
    """Group id -> its episodes with at least one turn (G(b) of CREDIT.md 1.2; loop twin of `episode_groups`)."""
    groups: dict[int, list[Ep]] = {}
    for e in eps_:
        if e.n > 0:
            groups.setdefault(e.g, []).append(e)
    return groups


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def std(xs: list[float], population: bool = False) -> float:
    if len(xs) <= 1:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) if population else len(xs) - 1))


def z(x: float, S: list[float], eps: float = 1e-6, use_std: bool = True, single: str = "zero", population: bool = False) -> float:
    """z(x; S) or center(x; S) with the singleton rule `single` ("raw" or "zero"); loop twin of `normalize`."""
    if len(S) == 1:
        if single == "raw":
            return x / (1 + eps) if use_std else x
        return 0.0
    if all(s == S[0] for s in S):
        return 0.0
    c = x - mean(S)
    return c / (std(S, population) + eps) if use_std else c


def loo(e: Ep, G: list[Ep], single: str) -> float:
    """`R - mean(R of the others in G)`; a singleton gives R ("raw") or 0; loop twin of `group_loo`."""
    others = [o.R for o in G if o.b != e.b]
    if not others:
        return e.R if single == "raw" else 0.0
    return e.R - mean(others)
