"""PVD: pooled value differences over abstract states (docs/credit.md, "pvd"; issue 19 item 2).

A tabular Monte-Carlo critic fitted on the batch itself: the value of an abstract state z (the env's
`info["abstract_state"]`, "equal progress, not equal text", packed as `abstract_BK1`) is the mean
discounted return-to-go of every turn taken from z, shrunk from the episode group's own mean toward
the batch-wide mean by a pseudo-count `prior`. A turn's advantage is the TD error of that critic,
`A[b,k] = r[b,k] + gamma * V(z[b,k+1]) - V(z[b,k])`, plus an optional group-normalised outcome term.
No extra episodes: the cost is GRPO's. `pvd_loop` is the loop reference (CREDIT.md 9.1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import Advantages, make_advantages, make_advantages_loop
from creditgym.credit.group_stats import (
    SINGLETON_RULES,
    dense_ids,
    episode_groups,
    episodes_of,
    group_z,
    groups_of,
    mean,
    z,
)
from creditgym.credit.registry import check_choice, register_estimator
from creditgym.credit.returns import rtg, rtg_loop

__all__ = ["abstract_ids", "pvd", "pvd_values"]


def abstract_ids(batch: CreditBatch, key: str = "abstract") -> Tensor:
    """`[B, K+1]` int ids of the abstract state before each turn, then (column n_b) the state after
    the last turn; -1 where unknown or padded. `key="abstract"` reads `abstract_BK1` and falls back to
    `state_BK` (no final state: its value is 0) when the batch has none; `key="state"` always uses
    `state_BK` (exact env states)."""
    mask = batch.turn_mask_BK
    if key == "abstract" and batch.abstract_BK1 is not None:
        z = batch.abstract_BK1.to(torch.int64)
        valid_BK1 = torch.nn.functional.pad(mask, (0, 1))
        n_B = mask.sum(1)
        final_BK1 = torch.arange(z.shape[1], device=z.device)[None, :] == n_B[:, None]
        return torch.where(valid_BK1 | final_BK1, z, -1)
    z = torch.where(mask, batch.state_BK.to(torch.int64), -1)
    return torch.nn.functional.pad(z, (0, 1), value=-1)


def pvd_values(
    X_BK: Tensor, z_BK1: Tensor, g_B: Tensor, mask_BK: Tensor, prior: float
) -> tuple[Tensor, Tensor]:
    """`V[b,j]` for every slot of `z_BK1` (0 where `z < 0` or z has no turn in the batch), and the
    number of turns of the same group from the same z (`[B, K+1]`, the cell sizes).

    `V_g(z) = (S_gz + prior * M_z) / (N_gz + prior)` with `S_gz`, `N_gz` the sum and count of the
    return-to-go `X` over valid turns of group g from z and `M_z` the batch-wide mean over turns from
    z; `prior = 0` is the group mean alone (the batch mean where the group has no turn from z).
    """
    B, K1 = z_BK1.shape
    dt = X_BK.dtype
    w = torch.nn.functional.pad(mask_BK, (0, 1)).to(dt)  # only valid turns carry data
    X = torch.nn.functional.pad(torch.where(mask_BK, X_BK, 0.0), (0, 1))
    known = z_BK1 >= 0
    zc = z_BK1.clamp(min=0)
    zid, Z = dense_ids(zc.reshape(-1))
    width = Z
    gid, S = dense_ids((g_B.to(torch.int64)[:, None] * width + zid.view(B, K1)).reshape(-1))
    zeros_Z = torch.zeros(Z, dtype=dt, device=X.device)
    zeros_S = torch.zeros(S, dtype=dt, device=X.device)
    w_N, X_N = w.reshape(-1), X.reshape(-1)
    n_Z = zeros_Z.index_add(0, zid, w_N)
    M_Z = zeros_Z.index_add(0, zid, w_N * X_N) / n_Z.clamp(min=1)
    n_S = zeros_S.index_add(0, gid, w_N)
    s_S = zeros_S.index_add(0, gid, w_N * X_N)
    M_N, n_N, s_N = M_Z[zid], n_S[gid], s_S[gid]
    den_N = n_N + prior
    V_N = torch.where(den_N > 0, (s_N + prior * M_N) / den_N.clamp(min=1e-30), M_N)
    V = torch.where(known, V_N.view(B, K1), 0.0)
    return V, torch.where(known, n_N.view(B, K1), 0.0)


def pvd_loop(batch: CreditBatch, gamma: float = 1.0, prior: float = 32.0, outcome_weight: float = 0.0, key: str = "abstract",
             bootstrap_truncated: bool = False, singleton: str = "raw", eps: float = 1e-6) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    use_abs = key == "abstract" and batch.abstract_BK1 is not None
    zrows = batch.abstract_BK1.tolist() if use_abs and batch.abstract_BK1 is not None else None
    zs = {e.b: (zrows[e.b][: e.n + 1] if zrows is not None else [*e.state, -1]) for e in eps_}
    X = {e.b: rtg_loop(e.r, gamma) for e in eps_}
    by_z: dict[int, list[float]] = {}
    by_gz: dict[tuple[int, int], list[float]] = {}
    for e in eps_:
        for k in range(e.n):
            by_z.setdefault(zs[e.b][k], []).append(X[e.b][k])
            by_gz.setdefault((e.g, zs[e.b][k]), []).append(X[e.b][k])

    def V(g: int, zz: int) -> float:
        if zz < 0 or zz not in by_z:
            return 0.0
        own, M = by_gz.get((g, zz), []), mean(by_z[zz])
        return (sum(own) + prior * M) / (len(own) + prior) if len(own) + prior > 0 else M

    turn = [[0.0] * batch.K for _ in eps_]
    pooled = cells = 0.0
    for e in eps_:
        A_E = 0.0
        if outcome_weight and e.n:
            A_E = z(e.R, [o.R for o in groups[e.g]], eps, True, singleton)
        for k in range(e.n):
            last = k == e.n - 1
            v_next = V(e.g, zs[e.b][k + 1]) if (not last or (e.truncated and bootstrap_truncated)) else 0.0
            turn[e.b][k] = e.r[k] + gamma * v_next - V(e.g, zs[e.b][k]) + outcome_weight * A_E
            size = len(by_gz[(e.g, zs[e.b][k])])
            pooled += size >= 2
            cells += size
    n = max(1, sum(e.n for e in eps_))
    boot = sum(1 for e in eps_ if e.n and e.truncated and bootstrap_truncated)
    extras = {"pvd/frac_turns_pooled": pooled / n, "pvd/mean_cell_size": cells / n,
              "pvd/frac_bootstrapped": boot / max(1, sum(1 for e in eps_ if e.n))}  # fmt: skip
    return make_advantages_loop(batch, eps_, turn, None, extras)


@register_estimator("pvd", loop=pvd_loop)
def pvd(
    batch: CreditBatch,
    *,
    gamma: float = 1.0,
    prior: float = 32.0,
    outcome_weight: float = 0.0,
    key: str = "abstract",
    bootstrap_truncated: bool = False,
    singleton: str = "raw",
    eps: float = 1e-6,
) -> Advantages:
    """Pooled value differences (docs/credit.md "pvd"): `A = r + gamma V(z') - V(z) + w * A_E`.

    `V` is the tabular Monte-Carlo value of the abstract state (`pvd_values`); after a terminated
    episode's last turn V = 0, after a truncated one 0 unless `bootstrap_truncated` (then the value
    of the final abstract state). `A_E` is grpo's group z-score of `outcome_B` (weight
    `outcome_weight`, default 0).
    """
    check_choice("pvd", "key", key, ("abstract", "state"))
    check_choice("pvd", "singleton", singleton, SINGLETON_RULES)
    if not prior >= 0:
        raise ValueError(f"estimator 'pvd': prior must be >= 0, got {prior!r}")
    mask = batch.turn_mask_BK
    dt = batch.rewards_BK.dtype
    B, K = mask.shape
    eg = episode_groups(batch)
    r = torch.where(mask, batch.rewards_BK, 0.0)
    X = rtg(r, gamma)
    z = abstract_ids(batch, key).to(mask.device)
    V, cell = pvd_values(X, z, eg.g_B, mask, prior)
    n_B = mask.sum(1)
    k1 = torch.arange(1, K + 1, device=mask.device)[None, :]
    boot_B = batch.truncated_B & bool(bootstrap_truncated)
    cont = (k1 < n_B[:, None]) | ((k1 == n_B[:, None]) & boot_B[:, None])
    V_next = torch.where(cont, V[:, 1:], 0.0)
    A = r + gamma * V_next - V[:, :K]
    if outcome_weight:
        A_E = group_z(batch.outcome_B.to(dt), eg, use_std=True, eps=eps, singleton=singleton, w_B=eg.has_B.to(dt))
        A = A + outcome_weight * A_E[:, None]
    n_valid = mask.sum().to(dt).clamp(min=1)
    extras = {
        "pvd/frac_turns_pooled": ((cell[:, :K] >= 2) & mask).sum().to(dt) / n_valid,
        "pvd/mean_cell_size": torch.where(mask, cell[:, :K], 0.0).sum() / n_valid,
        "pvd/frac_bootstrapped": (boot_B & (n_B > 0)).sum().to(dt) / (n_B > 0).sum().to(dt).clamp(min=1),
    }
    return make_advantages(batch, torch.where(mask, A, 0.0), extras=extras)
