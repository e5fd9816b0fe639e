"""Generalized Advantage Estimation at token, turn and hierarchical level (CREDIT.md section 3).

Schulman et al., arXiv 1506.02438; the hierarchical form follows ArCHer (arXiv 2402.19446) and
VAGEN's bi-level GAE (arXiv 2510.16907) as CREDIT.md 3 defines it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import (
    Advantages,
    broadcast_to_tokens,
    make_advantages,
    token_index,
    whiten_stats,
)
from creditgym.credit.layout import whiten_turns
from creditgym.credit.ops import rtg
from creditgym.credit.registry import check_choice, check_finite, register_estimator, require

__all__ = ["bootstrap_values_B", "gae", "next_values_BK", "token_gae_TB", "turn_edges", "turn_gae_BK"]

_HOW_VALUES = "train with PPOTrainer (critic) or attach them with batch.with_values(values_BK=...)"


def bootstrap_values_B(name: str, batch: CreditBatch, bootstrap_truncated: bool) -> Tensor:
    """`values_BK[b, n_b]` for truncated episodes when bootstrapping, else 0 (CREDIT.md 1.3)."""
    dt = batch.rewards_BK.dtype
    use_B = batch.truncated_B & batch.turn_mask_BK.any(1) if bootstrap_truncated else None
    if use_B is None or not bool(use_B.any()):
        return torch.zeros(batch.B, dtype=dt, device=batch.device)
    values_BK = require(
        name,
        batch,
        "values_BK",
        "bootstrap values for truncated episodes",
        "pack values with the bootstrap column or pass bootstrap_truncated=False",
    )
    n_B = batch.turn_mask_BK.sum(1)
    K = values_BK.shape[1]
    missing = (use_B & (n_B >= K)).nonzero()
    if missing.numel():
        b = int(missing[0, 0])
        raise ValueError(
            f"estimator {name!r} needs a bootstrap value for truncated episode {b}: values_BK has no column "
            f"{int(n_B[b])} (n_b); pack values with the bootstrap column or pass bootstrap_truncated=False"
        )
    boot_B = values_BK.gather(1, n_B.clamp(max=K - 1)[:, None])[:, 0].to(dt)
    check_finite(name, "values_BK (bootstrap column)", boot_B[:, None], use_B[:, None])
    return torch.where(use_B, boot_B, torch.zeros_like(boot_B))


def next_values_BK(values_BK: Tensor, mask_BK: Tensor, boot_B: Tensor) -> Tensor:
    """`V_{k+1}`: the next turn's value inside the episode, `boot_B` after the last turn, 0 beyond."""
    nxt = torch.cat([values_BK[:, 1:], torch.zeros_like(values_BK[:, :1])], 1)
    inside = torch.cat([mask_BK[:, 1:], torch.zeros_like(mask_BK[:, :1])], 1)
    nxt = torch.where(inside, nxt, torch.zeros_like(nxt))
    return torch.where(mask_BK & ~inside, boot_B[:, None].expand_as(nxt), nxt)


def turn_gae_BK(
    rewards_BK: Tensor, values_BK: Tensor, mask_BK: Tensor, boot_B: Tensor, gamma: float, lam: float
) -> Tensor:
    """Turn-level GAE: `delta_k = r_k + gamma V_{k+1} - V_k`, `A = RTG_{gamma lam}(delta)`."""
    v = torch.where(mask_BK, values_BK, torch.zeros_like(values_BK))
    delta = rewards_BK + gamma * next_values_BK(v, mask_BK, boot_B) - v
    delta = torch.where(mask_BK, delta, torch.zeros_like(delta))
    return rtg(delta, gamma * lam)


def turn_edges(token_turn_BT: Tensor) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """(b, t, k) of every turn's first and of its last action token, by `nonzero` (no episode loop)."""
    act = token_turn_BT >= 0
    change = token_turn_BT[:, 1:] != token_turn_BT[:, :-1]
    first, last = act.clone(), act
    first[:, 1:] &= change
    last = last.clone()
    last[:, :-1] &= change
    out = []
    for flag in (first, last):
        b, t = flag.nonzero(as_tuple=True)
        out.append((b, t, token_turn_BT[b, t].to(torch.int64)))
    return out[0], out[1]


def token_gae_TB(
    token_turn_BT: Tensor,
    v_BT: Tensor,
    r_BK: Tensor,
    boot_B: Tensor,
    gamma: float,
    lam: float,
    restart_each_turn: bool,
    last: tuple[Tensor, Tensor, Tensor],
) -> Tensor:
    """GAE over action tokens, observation tokens skipped; reward `r_BK[b,k]` on turn k's last token.

    A reversed loop over T with `[B]` vector ops on time-major copies (CREDIT.md 10). With
    `restart_each_turn` the next value and running advantage are 0 after each turn's last token
    (hierarchical inner GAE). Returns the running advantage `[T, B]` (meaningful at action tokens).
    """
    B, T = token_turn_BT.shape
    bl, tl, kl = last
    rT = torch.zeros(T, B, dtype=r_BK.dtype, device=r_BK.device)
    rT[tl, bl] = r_BK[bl, kl]
    lastT = None
    if restart_each_turn:
        lastT = torch.zeros(T, B, dtype=torch.bool, device=r_BK.device)
        lastT[tl, bl] = True
    vT = v_BT.to(r_BK.dtype).T.contiguous()
    rT -= vT  # r_t - v_t, so each step adds gamma * v_next + gamma * lam * A
    actT = (token_turn_BT >= 0).T.contiguous()
    outT = torch.empty_like(vT)
    A = torch.zeros_like(boot_B)
    v_next = boot_B.clone()
    gl = gamma * lam
    for t in range(T - 1, -1, -1):
        a = actT[t]
        if lastT is not None:
            v_next = v_next.masked_fill(lastT[t], 0.0)
            A = A.masked_fill(lastT[t], 0.0)
        cand = torch.add(rT[t], v_next, alpha=gamma).add_(A, alpha=gl)
        A = torch.where(a, cand, A, out=outT[t])
        v_next = torch.where(a, vT[t], v_next)
    return outT


@register_estimator("gae", needs={"values": "critic"})
def gae(
    batch: CreditBatch,
    *,
    level: str = "token",
    gamma: float = 1.0,
    lam: float = 0.95,
    bootstrap_truncated: bool = True,
    whiten: bool = True,
    gamma_token: float = 1.0,
    lam_token: float = 1.0,
) -> Advantages:
    """GAE (arXiv 1506.02438) at `level` "token", "turn" or "hierarchical" (CREDIT.md 3).

    Fills `returns_BK` / `returns_BT` = A + V before whitening; `whiten` applies verl's batch
    whitening over trainable tokens to `token_BT` and `turn_BK` alike (CREDIT.md 1.4).
    """
    check_choice("gae", "level", level, ("token", "turn", "hierarchical"))
    dt = batch.rewards_BK.dtype
    mask = batch.turn_mask_BK
    r = torch.where(mask, batch.rewards_BK, 0.0)
    boot_B = bootstrap_values_B("gae", batch, bootstrap_truncated)
    used = batch.truncated_B & mask.any(1) if bootstrap_truncated else torch.zeros_like(batch.truncated_B)
    extras = {"gae/frac_bootstrapped": used.to(dt).mean()}
    if level in ("turn", "hierarchical"):
        V = require("gae", batch, "values_BK", f"turn values (level={level!r})", _HOW_VALUES).to(dt)
        check_finite("gae", "values_BK", V, mask)
        A_T = turn_gae_BK(r, V, mask, boot_B, gamma, lam)
        returns_BK = torch.where(mask, A_T + V, 0.0)
    if level == "turn":
        returns_BT = broadcast_to_tokens(returns_BK, batch.token_turn_BT, None)
        tix = token_index(batch, dt)
        if whiten:
            mu, inv, ok = whiten_turns(A_T, tix.w_BK)
            A_T = (A_T - mu) * inv * ok
        return make_advantages(batch, A_T, None, extras, returns_BK=returns_BK, returns_BT=returns_BT, tix=tix)
    v_BT = require(
        "gae", batch, "token_values_BT", f"token values (level={level!r})",
        "train with PPOTrainer (value head) or attach them with batch.with_values(token_values_BT=...)",
    ).to(dt)  # fmt: skip
    act_BT = batch.token_turn_BT >= 0
    check_finite("gae", "token_values_BT", v_BT, act_BT)
    (bf, tf, kf), last = turn_edges(batch.token_turn_BT)
    if level == "token":
        A_TB = token_gae_TB(batch.token_turn_BT, v_BT, r, boot_B, gamma, lam, False, last)
        turn_BK = torch.zeros_like(r)
        turn_BK[bf, kf] = A_TB[tf, bf]
        returns_BK = torch.zeros_like(r)
        returns_BK[bf, kf] = A_TB[tf, bf] + v_BT[bf, tf]
    else:
        A_TB = token_gae_TB(batch.token_turn_BT, v_BT, returns_BK, torch.zeros_like(boot_B), gamma_token, lam_token, True, last)
        turn_BK = A_T
    A_BT = A_TB.T.contiguous()
    del A_TB
    returns_BT = torch.where(act_BT, A_BT + v_BT, 0.0)
    token_BT = torch.where(batch.loss_mask_BT, A_BT, 0.0)
    del A_BT
    if whiten:
        mu, inv, ok = whiten_stats(token_BT, batch.loss_mask_BT)
        token_BT = (token_BT - mu).mul_(inv * ok)
        turn_BK = (turn_BK - mu) * inv * ok
    return make_advantages(batch, turn_BK, token_BT, extras, returns_BK=returns_BK, returns_BT=returns_BT)
