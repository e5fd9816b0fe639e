"""Monte-Carlo segment values: `vineppo` and `spo` (CREDIT.md section 7). Segments are turns."""

from __future__ import annotations

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import Advantages, make_advantages
from creditgym.credit.gae import bootstrap_values_B, turn_gae_BK
from creditgym.credit.layout import episode_groups
from creditgym.credit.registry import check_choice, check_finite, register_estimator, require
from creditgym.credit.tree import tree_metrics, tree_values

__all__ = ["spo", "vineppo"]

_HOW_MC = "collect branch rollouts and attach agents.offline.mc_values(...) with batch.with_values(values_BK=...)"


def mc_advantage_BK(name: str, batch: CreditBatch, gamma: float, bootstrap_truncated: bool) -> Tensor:
    """`A = r_k + gamma V_{k+1} - V_k` with Monte-Carlo values; after the last turn 0, or the
    bootstrap column of a truncated episode when `bootstrap_truncated` (CREDIT.md 1.3, 7.1)."""
    mask = batch.turn_mask_BK
    dt = batch.rewards_BK.dtype
    V = require(name, batch, "values_BK", "Monte-Carlo values", _HOW_MC).to(dt)
    check_finite(name, "values_BK", V, mask)
    boot = bootstrap_values_B(name, batch, bootstrap_truncated)
    return turn_gae_BK(torch.where(mask, batch.rewards_BK, 0.0), V, mask, boot, gamma, 0.0)


@register_estimator("vineppo", needs={"branches": {"at": "every_turn", "n": 9, "train": False}, "values": "mc"})
def vineppo(batch: CreditBatch, *, gamma: float = 1.0, bootstrap_truncated: bool = False) -> Advantages:
    """VinePPO (arXiv 2410.01679): `A = r + gamma V(s') - V(s)` with Monte-Carlo values (7.1)."""
    return make_advantages(batch, mc_advantage_BK("vineppo", batch, gamma, bootstrap_truncated))


@register_estimator(
    "spo", needs={"branches": {"at": "every_turn", "n": 4, "train": {"variant": "tree"}}, "values": "mc"}
)
def spo(
    batch: CreditBatch,
    *,
    variant: str = "chain",
    gamma: float = 1.0,
    bootstrap_truncated: bool = False,
    prob_mask: bool = False,
    rho: float = 0.9,
) -> Advantages:
    """Segment Policy Optimization (arXiv 2505.23564), turns as segments (CREDIT.md 7.2).

    chain: the Monte-Carlo segment advantage (= vineppo); tree: `V(node) - V(parent)` over the
    prefix tree with raw leaf values; `prob_mask` gives the segment advantage only to action tokens
    whose sampling probability is below `rho` (cutpoints).
    """
    check_choice("spo", "variant", variant, ("chain", "tree"))
    extras: dict[str, Tensor] = {}
    if variant == "chain":
        A = mc_advantage_BK("spo", batch, gamma, bootstrap_truncated)
    else:
        tv = tree_values(batch, batch.outcome_B.to(batch.rewards_BK.dtype), episode_groups(batch))
        A = tv.V_BK - tv.par_BK
        extras = tree_metrics(batch, tv)
    A = torch.where(batch.turn_mask_BK, A, 0.0)
    token_BT = None
    if prob_mask:
        logp = require("spo", batch, "logprobs_BT", "sampling log-probabilities (prob_mask=True)",
                       "collect with a policy that returns action logprobs (Turn.action_logprobs)")  # fmt: skip
        idx = batch.token_turn_BT.clamp(min=0).to(torch.int64)
        cut = batch.loss_mask_BT & (logp.exp() < rho)
        token_BT = A.gather(1, idx).masked_fill_(~cut, 0)
        extras["spo/frac_cutpoint_tokens"] = cut.sum().to(A.dtype) / batch.loss_mask_BT.sum().clamp(min=1).to(A.dtype)
    return make_advantages(batch, A, token_BT, extras)
