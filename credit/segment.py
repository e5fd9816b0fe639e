"""Monte-Carlo segment values: `vineppo` and `spo` (CREDIT.md section 7). Segments are turns.

Each section holds the loop reference (`*_loop`, CREDIT.md 9.1) and then the vectorised code.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import Advantages, make_advantages, make_advantages_loop
from creditgym.credit.gae import bootstrap_values_B, turn_gae_BK
from creditgym.credit.group_stats import Ep, episode_groups, episodes_of, groups_of
from creditgym.credit.registry import check_choice, check_finite, register_estimator, require
from creditgym.credit.tree import TreeLoop, tree_metrics, tree_values

__all__ = ["spo", "vineppo"]

_HOW_MC = "collect branch rollouts and attach agents.offline.mc_values(...) with batch.with_values(values_BK=...)"


# ---------------------------------------------------------------- Monte-Carlo advantages (1.3, 7.1)
def mc_advantage_BK(name: str, batch: CreditBatch, gamma: float, bootstrap_truncated: bool) -> Tensor:
    """`A = r_k + gamma V_{k+1} - V_k` with Monte-Carlo values; after the last turn 0, or the
    bootstrap column of a truncated episode when `bootstrap_truncated` (CREDIT.md 1.3, 7.1)."""
    mask = batch.turn_mask_BK
    dt = batch.rewards_BK.dtype
    V = require(name, batch, "values_BK", "Monte-Carlo values", _HOW_MC).to(dt)
    check_finite(name, "values_BK", V, mask)
    boot = bootstrap_values_B(name, batch, bootstrap_truncated)
    return turn_gae_BK(torch.where(mask, batch.rewards_BK, 0.0), V, mask, boot, gamma, 0.0)


def mc_advantage_loop(e: Ep, gamma: float, bootstrap: bool) -> list[float]:
    """`mc_advantage_BK` of one episode by a loop."""
    assert e.values is not None
    out = []
    for k in range(e.n):
        if k + 1 < e.n:
            nxt = e.values[k + 1]
        else:
            nxt = e.values[e.n] if (bootstrap and e.truncated) else 0.0
        out.append(e.r[k] + gamma * nxt - e.values[k])
    return out


# ---------------------------------------------------------------- vineppo (7.1)
def vineppo_loop(batch: CreditBatch, gamma: float = 1.0, bootstrap_truncated: bool = False) -> Advantages:
    eps_ = episodes_of(batch)
    turn = [mc_advantage_loop(e, gamma, bootstrap_truncated) + [0.0] * (batch.K - e.n) for e in eps_]
    return make_advantages_loop(batch, eps_, turn)


@register_estimator(
    "vineppo", needs={"branches": {"at": "every_turn", "n": 9, "train": False}, "values": "mc"}, loop=vineppo_loop
)
def vineppo(batch: CreditBatch, *, gamma: float = 1.0, bootstrap_truncated: bool = False) -> Advantages:
    """VinePPO (arXiv 2410.01679): `A = r + gamma V(s') - V(s)` with Monte-Carlo values (7.1)."""
    return make_advantages(batch, mc_advantage_BK("vineppo", batch, gamma, bootstrap_truncated))


# ---------------------------------------------------------------- spo (7.2)
def spo_loop(batch: CreditBatch, variant: str = "chain", gamma: float = 1.0, bootstrap_truncated: bool = False,
             prob_mask: bool = False, rho: float = 0.9) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch, logprobs=prob_mask)
    extras: dict[str, float] = {}
    if variant == "chain":
        turn = [mc_advantage_loop(e, gamma, bootstrap_truncated) + [0.0] * (batch.K - e.n) for e in eps_]
    else:
        tr = TreeLoop(eps_, groups_of(eps_), {e.b: e.R for e in eps_})
        turn = [[tr.V(e.node[k]) - tr.par(e, k) for k in range(e.n)] + [0.0] * (batch.K - e.n) for e in eps_]
        extras = tr.metrics()
    token = None
    if prob_mask:
        token, cuts, total = [], 0, 0
        for e in eps_:
            assert e.logprobs is not None
            row = []
            for t, k in enumerate(e.tok_turn):
                cut = k >= 0 and e.loss[t] and math.exp(e.logprobs[t]) < rho
                cuts += cut
                total += e.loss[t]
                row.append(turn[e.b][k] if cut else 0.0)
            token.append(row)
        extras["spo/frac_cutpoint_tokens"] = cuts / max(1, total)
    return make_advantages_loop(batch, eps_, turn, token, extras)


@register_estimator(
    "spo",
    needs={"branches": {"at": "every_turn", "n": 4, "train": {"variant": "tree"}}, "values": "mc"},
    loop=spo_loop,
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
