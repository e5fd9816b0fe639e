"""Generalized Advantage Estimation at token, turn and hierarchical level (CREDIT.md section 3).

Schulman et al., arXiv 1506.02438; the hierarchical form follows ArCHer (arXiv 2402.19446) and
VAGEN's bi-level GAE (arXiv 2510.16907) as CREDIT.md 3 defines it. The token-level kernel is in
`token_gae`; `gae_loop` is the loop reference of all three levels (CREDIT.md 9.1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import (
    Advantages,
    broadcast_to_tokens,
    make_advantages,
    make_advantages_loop,
    token_counts,
    whiten_stats,
    whiten_tokens_,
)
from creditgym.credit.group_stats import Ep, episodes_of, mean, whiten_turns
from creditgym.credit.registry import check_choice, check_finite, register_estimator, require
from creditgym.credit.returns import rtg
from creditgym.credit.token_gae import token_level

__all__ = ["bootstrap_values_B", "gae", "next_values_BK", "turn_gae_BK"]

_HOW_VALUES = "train with PPOTrainer (critic) or attach them with batch.with_values(values_BK=...)"


# ---------------------------------------------------------------- bootstrap values and turn-level GAE (1.3, 3)
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


# ---------------------------------------------------------------- gae (3)
def _boot(e: Ep, bootstrap: bool) -> float:
    return e.values[e.n] if (bootstrap and e.truncated and e.n > 0 and e.values is not None) else 0.0


def _turn_gae(e: Ep, gamma: float, lam: float, boot: float) -> list[float]:
    A, acc = [0.0] * e.n, 0.0
    assert e.values is not None
    for k in range(e.n - 1, -1, -1):
        v_next = e.values[k + 1] if k + 1 < e.n else boot
        acc = e.r[k] + gamma * v_next - e.values[k] + gamma * lam * acc
        A[k] = acc
    return A


def _token_gae(e: Ep, rewards: list[float], gamma: float, lam: float, boot: float, restart: bool) -> list[float]:
    """GAE over action tokens; rewards[k] on turn k's last action token; per-turn restart if asked."""
    assert e.tok_values is not None
    out = [0.0] * len(e.tok_turn)
    acts = e.action_tokens()
    acc, v_next = 0.0, boot
    for i in range(len(acts) - 1, -1, -1):
        t, k = acts[i]
        is_last = i == len(acts) - 1 or acts[i + 1][1] != k
        if restart and is_last:
            acc, v_next = 0.0, 0.0
        delta = (rewards[k] if is_last else 0.0) + gamma * v_next - e.tok_values[t]
        acc = delta + gamma * lam * acc
        out[t] = acc
        v_next = e.tok_values[t]
    return out


def gae_loop(batch: CreditBatch, level: str = "token", gamma: float = 1.0, lam: float = 1.0,
             bootstrap_truncated: bool = True, whiten: bool = True, gamma_token: float = 1.0,
             lam_token: float = 1.0) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch, token_values=level != "turn")
    turn = [[0.0] * batch.K for _ in eps_]
    token = [[0.0] * batch.T for _ in eps_]
    ret_K = [[0.0] * batch.K for _ in eps_]
    ret_T = [[0.0] * batch.T for _ in eps_]
    for e in eps_:
        boot = _boot(e, bootstrap_truncated)
        acts = e.action_tokens()
        if level in ("turn", "hierarchical"):
            A_T = _turn_gae(e, gamma, lam, boot)
            assert e.values is not None
            G_T = [A_T[k] + e.values[k] for k in range(e.n)]
            turn[e.b][: e.n] = A_T
            ret_K[e.b][: e.n] = G_T
        if level == "turn":
            for t, k in acts:
                token[e.b][t] = A_T[k]
                ret_T[e.b][t] = G_T[k]
            continue
        if level == "token":
            inner = _token_gae(e, e.r, gamma, lam, boot, restart=False)
        else:
            inner = _token_gae(e, G_T, gamma_token, lam_token, 0.0, restart=True)
        assert e.tok_values is not None
        seen: set[int] = set()
        for t, k in acts:
            token[e.b][t] = inner[t]
            ret_T[e.b][t] = inner[t] + e.tok_values[t]
            if level == "token" and k not in seen:
                turn[e.b][k] = inner[t]
                ret_K[e.b][k] = inner[t] + e.tok_values[t]
            seen.add(k)
    if whiten:
        pool = [token[e.b][t] for e in eps_ for t in range(len(e.loss)) if e.loss[t]]
        if len(pool) >= 2:
            mu = mean(pool)
            sd = math.sqrt(sum((x - mu) ** 2 for x in pool) / (len(pool) - 1) + 1e-8)
            token = [[(x - mu) / sd for x in row] for row in token]
            turn = [[(x - mu) / sd for x in row] for row in turn]
        else:
            token = [[0.0] * batch.T for _ in eps_]
            turn = [[0.0] * batch.K for _ in eps_]
    used = sum(bootstrap_truncated and e.truncated and e.n > 0 for e in eps_) / len(eps_)
    return make_advantages_loop(batch, eps_, turn, token, {"gae/frac_bootstrapped": used}, returns_BK=ret_K, returns_BT=ret_T)


@register_estimator("gae", needs={"values": "critic"}, loop=gae_loop)
def gae(
    batch: CreditBatch,
    *,
    level: str = "token",
    gamma: float = 1.0,
    lam: float = 1.0,
    bootstrap_truncated: bool = True,
    whiten: bool = True,
    gamma_token: float = 1.0,
    lam_token: float = 1.0,
) -> Advantages:
    """GAE (arXiv 1506.02438) at `level` "token", "turn" or "hierarchical" (CREDIT.md 3).

    Fills `returns_BK` / `returns_BT` = A + V before whitening; `whiten` applies verl's batch
    whitening over trainable tokens to `token_BT` and `turn_BK` alike (CREDIT.md 1.4). `lam` defaults
    to 1 (verl's choice for LLMs; CREDIT.md's 0.95 is OpenRLHF's): at token level lam < 1 discounts
    the reward per token, and on Tools d2 with a model policy lam 0.95 ranked turns at 0.34 against
    lam 1's 0.74 (docs/design-notes.md, "GAE's lambda is 1").
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
        w_BK = token_counts(batch, dt)
        if whiten:
            mu, inv, ok = whiten_turns(A_T, w_BK)
            A_T = (A_T - mu) * inv * ok
        return make_advantages(batch, A_T, None, extras, returns_BK=returns_BK, returns_BT=returns_BT, w_BK=w_BK)
    v_BT = require(
        "gae", batch, "token_values_BT", f"token values (level={level!r})",
        "train with PPOTrainer (value head) or attach them with batch.with_values(token_values_BT=...)",
    ).to(dt)  # fmt: skip
    if not bool(torch.isfinite(v_BT.sum())):
        check_finite("gae", "token_values_BT", v_BT, batch.token_turn_BT >= 0)
    if level == "token":
        token_BT, returns_BT, turn_BK, returns_BK = token_level(batch, v_BT, r, boot_B, gamma, lam, False)
    else:
        zero_B = torch.zeros_like(boot_B)
        token_BT, returns_BT, _, _ = token_level(batch, v_BT, returns_BK, zero_B, gamma_token, lam_token, True)
        turn_BK = A_T
    if whiten:
        mu, inv, ok = whiten_stats(token_BT, batch.loss_mask_BT)
        whiten_tokens_(token_BT, batch.loss_mask_BT, mu, inv * ok)
        turn_BK = (turn_BK - mu) * inv * ok
    return make_advantages(
        batch, turn_BK, token_BT, extras, returns_BK=returns_BK, returns_BT=returns_BT, token_masked=True
    )
