"""Prefix-tree estimators: `tree` (TEMPO / TreeRL) and `tree_grpo` (CREDIT.md section 6)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import Advantages, make_advantages
from creditgym.credit.layout import EpisodeGroups, episode_groups
from creditgym.credit.ops import SINGLETON_RULES, dense_ids, flat_group_BK, normalize
from creditgym.credit.outcome import grpo_B
from creditgym.credit.registry import check_choice, register_estimator

__all__ = ["TreeValues", "tree", "tree_grpo", "tree_values"]


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


@register_estimator(
    "tree", needs={"branches": {"at": "tree", "n": 2, "depth": 2, "train": True}, "optional": True}
)
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


@register_estimator(
    "tree_grpo", needs={"branches": {"at": "tree", "n": 2, "depth": 2, "train": True}, "optional": True}
)
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
