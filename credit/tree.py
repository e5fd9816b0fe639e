"""Prefix-tree estimators: `tree` (TEMPO / TreeRL) and `tree_grpo` (CREDIT.md section 6).

Node values (vectorised, then `TreeLoop`), then per estimator its loop reference (`*_loop`, CREDIT.md
9.1) and the vectorised estimator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import Advantages, make_advantages, make_advantages_loop
from creditgym.credit.group_stats import (
    SINGLETON_RULES,
    Ep,
    EpisodeGroups,
    dense_ids,
    episode_groups,
    episodes_of,
    flat_group_BK,
    groups_of,
    mean,
    normalize,
    z,
)
from creditgym.credit.outcome import grpo_B
from creditgym.credit.registry import check_choice, register_estimator

__all__ = ["TreeLoop", "TreeValues", "tree", "tree_grpo", "tree_metrics", "tree_values"]

# a prefix tree of 2-way branches at the first two turns; trained on all of it (CREDIT.md 1.4, 6)
TREE_NEEDS = {"branches": {"at": "tree", "n": 2, "depth": 2, "train": True}, "optional": True}


# ---------------------------------------------------------------- node values (6.1)
@dataclass(frozen=True)
class TreeValues:
    """Node values of CREDIT.md 6.1 at every (b, k): `V_BK = V(node_BK[b,k])`, `par_BK` the parent's
    value (the root's for k = 0), `leaves_BK = |L(node)|`, `root_B = V(root of b's group)`."""

    V_BK: Tensor
    par_BK: Tensor
    leaves_BK: Tensor
    root_B: Tensor
    node_seg_N: Tensor
    node_cnt_S: Tensor


def tree_values(batch: CreditBatch, u_B: Tensor, eg: EpisodeGroups) -> TreeValues:
    """`V(n) = mean(u over the leaves under n)` by one index_add over the valid node entries (10)."""
    mask = batch.turn_mask_BK
    B, K = mask.shape
    dt = u_B.dtype
    seg, S = dense_ids(batch.node_BK.reshape(-1))
    w = mask.reshape(-1).to(dt)
    u_N = u_B[:, None].expand(B, K).reshape(-1)
    zeros = torch.zeros(S, dtype=dt, device=u_B.device)
    cnt = zeros.index_add(0, seg, w)
    tot = zeros.index_add(0, seg, w * u_N)
    V_BK = torch.where(mask, (tot / cnt.clamp(min=1))[seg].view(B, K), 0.0)
    wg = eg.has_B.to(dt)
    gz = torch.zeros(eg.G, dtype=dt, device=u_B.device)
    root_G = gz.index_add(0, eg.g_B, wg * u_B) / gz.index_add(0, eg.g_B, wg).clamp(min=1)
    root_B = root_G[eg.g_B]
    par_BK = torch.cat([root_B[:, None], V_BK[:, :-1]], 1)
    leaves_BK = torch.where(mask, cnt[seg].view(B, K), 0.0)
    return TreeValues(V_BK, par_BK, leaves_BK, root_B, seg, cnt)


def tree_metrics(batch: CreditBatch, tv: TreeValues) -> dict[str, Tensor]:
    """`tree/num_nodes`, `tree/frac_branching_nodes` (nodes with >= 2 children), `tree/mean_leaves_per_node`."""
    mask = batch.turn_mask_BK
    B, K = mask.shape
    S = tv.node_cnt_S.numel()
    dt = tv.V_BK.dtype
    present = tv.node_cnt_S > 0
    num = present.sum().to(dt)
    seg_BK = tv.node_seg_N.view(B, K)
    edge = mask[:, 1:]
    key = torch.where(edge, seg_BK[:, :-1] * S + seg_BK[:, 1:], -1).reshape(-1)
    pairs = torch.unique(key)
    pairs = pairs[pairs >= 0]
    children = torch.zeros(S, dtype=dt, device=key.device).index_add_(0, pairs // S, torch.ones_like(pairs, dtype=dt))
    return {
        "tree/num_nodes": num,
        "tree/frac_branching_nodes": (children >= 2).sum().to(dt) / num.clamp(min=1),
        "tree/mean_leaves_per_node": torch.where(present, tv.node_cnt_S, 0.0).sum() / num.clamp(min=1),
    }


class TreeLoop:
    """Node values V(n) = mean of u over the leaves under n, and the group roots (CREDIT.md 6.1): the
    loop twin of `tree_values` and `tree_metrics`."""

    def __init__(self, eps_: list[Ep], groups: dict[int, list[Ep]], u: dict[int, float]):
        self.leaves: dict[int, list[float]] = {}
        self.children: dict[int, set[int]] = {}
        for e in eps_:
            for k in range(e.n):
                self.leaves.setdefault(e.node[k], []).append(u[e.b])
                if k >= 1:
                    self.children.setdefault(e.node[k - 1], set()).add(e.node[k])
        self.root = {g: mean([u[e.b] for e in G]) for g, G in groups.items()}

    def V(self, n: int) -> float:
        return mean(self.leaves[n])

    def par(self, e: Ep, k: int) -> float:
        return self.V(e.node[k - 1]) if k >= 1 else self.root[e.g]

    def metrics(self) -> dict[str, float]:
        num = len(self.leaves)
        return {
            "tree/num_nodes": float(num),
            "tree/frac_branching_nodes": sum(len(c) >= 2 for c in self.children.values()) / max(1, num),
            "tree/mean_leaves_per_node": mean([len(v) for v in self.leaves.values()]),
        }


# ---------------------------------------------------------------- tree: TEMPO, TreeRL (6.2)
def tree_loop(batch: CreditBatch, form: str = "tempo", beta: float = 1.0, leaf: str | None = None,
              singleton: str = "raw", eps: float = 1e-6) -> Advantages:  # fmt: skip
    leaf = leaf or ("grpo" if form == "tempo" else "raw")
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    A_ep = {e.b: z(e.R, [o.R for o in groups[e.g]], eps, leaf == "grpo", singleton) for e in eps_ if e.n}
    u = A_ep if leaf == "grpo" else {e.b: e.R for e in eps_}
    tr = TreeLoop(eps_, groups, u)
    turn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        for k in range(e.n):
            V = tr.V(e.node[k])
            if form == "tempo":
                turn[e.b][k] = A_ep[e.b] + (beta * (V - tr.par(e, k)) if k >= 1 else 0.0)
            else:
                L = len(tr.leaves[e.node[k]])
                turn[e.b][k] = ((V - tr.root[e.g]) + (V - tr.par(e, k))) / math.sqrt(L)
    return make_advantages_loop(batch, eps_, turn, None, tr.metrics())


@register_estimator("tree", needs=TREE_NEEDS, loop=tree_loop)
def tree(
    batch: CreditBatch,
    *,
    form: str = "tempo",
    beta: float = 1.0,
    leaf: str | None = None,
    singleton: str = "raw",
    eps: float = 1e-6,
) -> Advantages:
    """Prefix-tree credit: TEMPO (arXiv 2509.18314) `A_ep + beta * (V(n) - V(parent))` gated off at
    k = 0, or TreeRL (arXiv 2506.11902) `((V(n) - V(root)) + (V(n) - V(parent))) / sqrt(|L(n)|)`.

    `leaf` defaults to "grpo" for tempo and "raw" for treerl (CREDIT.md 6.2).
    """
    check_choice("tree", "form", form, ("tempo", "treerl"))
    leaf = leaf if leaf is not None else ("grpo" if form == "tempo" else "raw")
    check_choice("tree", "leaf", leaf, ("grpo", "raw"))
    check_choice("tree", "singleton", singleton, SINGLETON_RULES)
    eg = episode_groups(batch)
    dt = batch.rewards_BK.dtype
    R = batch.outcome_B.to(dt)
    A_ep = grpo_B(batch, norm_std=leaf == "grpo", eps=eps, singleton=singleton)
    u = A_ep if leaf == "grpo" else R
    tv = tree_values(batch, u, eg)
    if form == "tempo":
        td = tv.V_BK - tv.par_BK
        td[:, 0] = 0
        A = A_ep[:, None] + beta * td
    else:
        A = ((tv.V_BK - tv.root_B[:, None]) + (tv.V_BK - tv.par_BK)) / tv.leaves_BK.clamp(min=1).sqrt()
    return make_advantages(batch, A, extras=tree_metrics(batch, tv))


# ---------------------------------------------------------------- tree_grpo (6.3)
def tree_grpo_loop(batch: CreditBatch, eps: float = 1e-6, intra_weight: float = 1.0,
                   singleton: str = "raw") -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    turn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        if not e.n:
            continue
        G = groups[e.g]
        tree = [o.R for o in G if o.node[0] == e.node[0]]
        a = intra_weight * z(e.R, tree, eps) + z(e.R, [o.R for o in G], eps, single=singleton)
        turn[e.b][: e.n] = [a] * e.n
    tr = TreeLoop(eps_, groups, {e.b: e.R for e in eps_})
    return make_advantages_loop(batch, eps_, turn, None, tr.metrics())


@register_estimator("tree_grpo", needs=TREE_NEEDS, loop=tree_grpo_loop)
def tree_grpo(
    batch: CreditBatch, *, eps: float = 1e-6, intra_weight: float = 1.0, singleton: str = "raw"
) -> Advantages:
    """Tree-GRPO (arXiv 2509.21240): z within the episode's tree (same first-turn node) plus the
    group GRPO term (CREDIT.md 6.3)."""
    check_choice("tree_grpo", "singleton", singleton, SINGLETON_RULES)
    eg = episode_groups(batch)
    dt = batch.rewards_BK.dtype
    R = batch.outcome_B.to(dt)
    trees, S = flat_group_BK(eg.g_B, batch.node_BK[:, :1])
    intra = normalize(R, trees, eg.has_B.to(dt), S, eps=eps)
    A_B = intra_weight * intra + grpo_B(batch, eps=eps, singleton=singleton)
    tv = tree_values(batch, R, eg)
    return make_advantages(batch, A_B[:, None] * batch.turn_mask_BK.to(dt), extras=tree_metrics(batch, tv))
