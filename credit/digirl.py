"""DigiRL's doubly-robust step advantage (METHODS.md 6; arXiv 2406.11896, code DigiRL-agent/digirl).

With H the episode's last turn, r_H its final reward and V = `values_BK` (the step critic V_step;
the value after a terminating step is 0, after truncation the bootstrap slot V(s_n)):

    A_h = lam^(H-h) * r_H + (1 - lam^(H-h)) * (V(s_{h+1}) + r_h - V(s_h))

late steps lean on the Monte-Carlo outcome, early ones on a one-step TD estimate. `variant="release"`
is the released actor's form, `clamp(V(s') - V(s) - 0.05 + r_h + MC_h, 0, 1)` with `MC_h` the
return-to-go discounted by lam (the release's MC gamma 0.5). The loop reference sits beside the
vectorised estimator.
"""

from __future__ import annotations

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import (
    Advantages,
    broadcast_loop,
    broadcast_to_tokens,
    make_advantages,
    make_advantages_loop,
)
from creditgym.credit.group_stats import episodes_of
from creditgym.credit.registry import check_choice, register_estimator, require
from creditgym.credit.returns import rtg, rtg_loop

__all__ = ["digirl", "digirl_loop", "next_values_BK"]

_HOW = "the DigiRL trainer fills values_BK from its step critic (batch.with_values(values_BK=...))"
RELEASE_OFFSET = 0.05
"""The constant the released actor subtracts from its advantage (DigiRL-agent/digirl)."""


def digirl_loop(batch: CreditBatch, lam: float = 0.5, variant: str = "paper") -> Advantages:
    require("digirl", batch, "values_BK", "step values", _HOW)
    eps_ = episodes_of(batch)
    turn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        V = e.values or []
        H = e.n - 1
        mc = rtg_loop(e.r, lam)
        for h in range(e.n):
            v_next = V[h + 1] if (h < H or e.truncated) else 0.0
            td = v_next + e.r[h] - V[h]
            if variant == "paper":
                w = lam ** (H - h)
                turn[e.b][h] = w * e.r[H] + (1 - w) * td
            else:
                turn[e.b][h] = min(max(td - RELEASE_OFFSET + mc[h], 0.0), 1.0)
    ret = [[x for x in rtg_loop(e.r, 1.0)] + [0.0] * (batch.K - e.n) for e in eps_]
    return make_advantages_loop(batch, eps_, turn, returns_BK=ret, returns_BT=broadcast_loop(eps_, ret))


def next_values_BK(values_BK: Tensor, turn_mask_BK: Tensor, truncated_B: Tensor) -> Tensor:
    """`V(s_{h+1})` per turn: the next slot's value, 0 after the last turn of a terminated episode
    (the bootstrap slot of a truncated one is kept)."""
    B, K = values_BK.shape
    nxt = torch.cat([values_BK[:, 1:], torch.zeros(B, 1, dtype=values_BK.dtype, device=values_BK.device)], 1)
    n_B = turn_mask_BK.sum(1)
    last_BK = torch.arange(K, device=values_BK.device)[None, :] == (n_B[:, None] - 1)
    return torch.where(last_BK & ~truncated_B[:, None], torch.zeros_like(nxt), nxt)


@register_estimator("digirl", needs={"values": "critic"}, loop=digirl_loop)
def digirl(batch: CreditBatch, *, lam: float = 0.5, variant: str = "paper") -> Advantages:
    """DigiRL step advantage (METHODS.md 6): lam-blend of the outcome and the one-step TD error."""
    check_choice("digirl", "variant", variant, ("paper", "release"))
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"estimator 'digirl': lam must lie in [0, 1], got {lam}")
    V_BK = require("digirl", batch, "values_BK", "step values", _HOW).to(batch.rewards_BK.dtype)
    mask = batch.turn_mask_BK
    r_BK = torch.where(mask, batch.rewards_BK, torch.zeros_like(batch.rewards_BK))
    td_BK = next_values_BK(V_BK, mask, batch.truncated_B) + r_BK - V_BK
    returns_BK = rtg(r_BK, 1.0)  # the step critic's target: the undiscounted return-to-go (success for 0/1 rewards)
    returns_BT = broadcast_to_tokens(returns_BK, batch.token_turn_BT, batch.loss_mask_BT)
    if variant == "release":
        A_BK = (td_BK - RELEASE_OFFSET + rtg(r_BK, lam)).clamp(0.0, 1.0)
        return make_advantages(batch, A_BK, returns_BK=returns_BK, returns_BT=returns_BT)
    n_B = mask.sum(1)
    k = torch.arange(batch.K, device=batch.device)
    steps_left_BK = (n_B[:, None] - 1 - k[None, :]).clamp(min=0).to(r_BK.dtype)
    rH_B = torch.gather(r_BK, 1, (n_B - 1).clamp(min=0)[:, None]).squeeze(1)
    w_BK = torch.pow(torch.full_like(r_BK, float(lam)), steps_left_BK)
    A_BK = w_BK * rH_B[:, None] + (1 - w_BK) * td_BK
    return make_advantages(batch, A_BK, returns_BK=returns_BK, returns_BT=returns_BT)
