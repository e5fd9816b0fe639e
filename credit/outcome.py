"""Outcome baselines: one scalar per episode (CREDIT.md section 2), except token-level REINFORCE++.

Each section holds the loop reference (`*_loop`, CREDIT.md 9.1) and then the vectorised estimator.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
)
from creditgym.credit.group_stats import (
    SINGLETON_RULES,
    Ep,
    episode_groups,
    episodes_of,
    group_loo,
    group_z,
    groups_of,
    loo,
    mean,
    whiten_turns,
    z,
)
from creditgym.credit.registry import check_choice, check_finite, register_estimator, require
from creditgym.credit.returns import rtg
from creditgym.credit.token_layout import token_layout

__all__ = ["dr_grpo", "grpo", "grpo_B", "reinforce_pp", "reinforce_pp_baseline", "remax", "rloo"]


def _per_episode(batch: CreditBatch, adv_B: Tensor) -> Tensor:
    return adv_B[:, None] * batch.turn_mask_BK.to(adv_B.dtype)


def _per_episode_loop(batch: CreditBatch, fn: Callable[[Ep, list[Ep]], float]) -> Advantages:
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    turn = [[fn(e, groups[e.g]) if e.n else 0.0] * batch.K for e in eps_]
    return make_advantages_loop(batch, eps_, turn)


# ---------------------------------------------------------------- grpo, dr_grpo (2.1, 2.2)
def grpo_loop(batch: CreditBatch, norm_std: bool = True, eps: float = 1e-6, singleton: str = "raw") -> Advantages:
    return _per_episode_loop(batch, lambda e, G: z(e.R, [o.R for o in G], eps, norm_std, singleton))


def grpo_B(batch: CreditBatch, *, norm_std: bool = True, eps: float = 1e-6, singleton: str = "raw") -> Tensor:
    """Per-episode GRPO advantage `z(R; G(b))` (`center` without `norm_std`), arXiv 2402.03300."""
    eg = episode_groups(batch)
    return group_z(batch.outcome_B, eg, use_std=norm_std, eps=eps, singleton=singleton)


@register_estimator("grpo", loop=grpo_loop)
def grpo(batch: CreditBatch, *, norm_std: bool = True, eps: float = 1e-6, singleton: str = "raw") -> Advantages:
    """GRPO (DeepSeekMath, arXiv 2402.03300): `A = z(R[b]; G(b))` on every turn (CREDIT.md 2.1)."""
    check_choice("grpo", "singleton", singleton, SINGLETON_RULES)
    return make_advantages(batch, _per_episode(batch, grpo_B(batch, norm_std=norm_std, eps=eps, singleton=singleton)))


def dr_grpo_loop(batch: CreditBatch, singleton: str = "raw") -> Advantages:
    return grpo_loop(batch, norm_std=False, singleton=singleton)


@register_estimator("dr_grpo", loop=dr_grpo_loop)
def dr_grpo(batch: CreditBatch, *, singleton: str = "raw") -> Advantages:
    """Dr. GRPO (arXiv 2503.20783): `A = center(R[b]; G(b))`, no std division (CREDIT.md 2.2)."""
    check_choice("dr_grpo", "singleton", singleton, SINGLETON_RULES)
    return make_advantages(batch, _per_episode(batch, grpo_B(batch, norm_std=False, singleton=singleton)))


# ---------------------------------------------------------------- rloo (2.3)
def rloo_loop(batch: CreditBatch, singleton: str = "raw") -> Advantages:
    return _per_episode_loop(batch, lambda e, G: loo(e, G, singleton))


@register_estimator("rloo", loop=rloo_loop)
def rloo(batch: CreditBatch, *, singleton: str = "raw") -> Advantages:
    """RLOO (arXiv 2402.14740): `A = R[b] - mean(R of the other episodes of G(b))` (CREDIT.md 2.3)."""
    check_choice("rloo", "singleton", singleton, SINGLETON_RULES)
    adv_B = group_loo(batch.outcome_B, episode_groups(batch), singleton)
    return make_advantages(batch, _per_episode(batch, adv_B))


# ---------------------------------------------------------------- reinforce++, reinforce++_baseline (2.4)
def _whiten_loop(batch: CreditBatch, eps_: list[Ep], X: list[list[float]], Xturn: list[list[float]],
                 eps: float, stats: str, recenter: bool) -> Advantages:  # fmt: skip
    if stats == "token":
        pool = [X[e.b][t] for e in eps_ for t in range(len(e.loss)) if e.loss[t]]
    else:
        pool = [Xturn[e.b][k] for e in eps_ for k in range(e.n)]
    if len(pool) < 2:
        return make_advantages_loop(batch, eps_, [[0.0] * batch.K for _ in eps_], [[0.0] * batch.T for _ in eps_])
    mu = mean(pool)
    sd = math.sqrt(sum((x - mu) ** 2 for x in pool) / (len(pool) - 1) + eps)
    shift = mu if recenter else 0.0
    token = [[(x - shift) / sd for x in X[e.b]] for e in eps_]
    turn = [[(x - shift) / sd for x in Xturn[e.b]] for e in eps_]
    return make_advantages_loop(batch, eps_, turn, token)


def reinforce_pp_loop(batch: CreditBatch, gamma: float = 1.0, eps: float = 1e-8, stats: str = "token",
                      recenter: bool = True) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    X = [[0.0] * batch.T for _ in eps_]
    Xturn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        acts = e.action_tokens()
        acc = 0.0
        for i in range(len(acts) - 1, -1, -1):
            t, k = acts[i]
            is_last = i == len(acts) - 1 or acts[i + 1][1] != k
            acc = (e.r[k] if is_last else 0.0) + gamma * acc
            X[e.b][t] = acc
            if i == 0 or acts[i - 1][1] != k:
                Xturn[e.b][k] = acc
    return _whiten_loop(batch, eps_, X, Xturn, eps, stats, recenter)


def _whitened_turn_constant(
    batch: CreditBatch, X_BK: Tensor, stats: str, eps: float, recenter: bool
) -> Advantages:
    """Whiten values that are constant over each turn's tokens: token stats from per-turn counts."""
    w_tok = token_counts(batch, X_BK.dtype)
    w_BK = w_tok if stats == "token" else batch.turn_mask_BK
    mu, inv, ok = whiten_turns(X_BK, w_BK, eps)
    A_BK = ((X_BK - mu) if recenter else X_BK) * inv * ok
    return make_advantages(batch, A_BK, w_BK=w_tok)


@register_estimator("reinforce++", loop=reinforce_pp_loop)
def reinforce_pp(
    batch: CreditBatch, *, gamma: float = 1.0, eps: float = 1e-8, stats: str = "token", recenter: bool = True
) -> Advantages:
    """REINFORCE++ (arXiv 2501.03262), token level as verl: batch-whitened discounted token returns.

    Each turn's reward sits on its last action token; returns run over action tokens only
    (observation tokens are skipped). `Y_k = r_k + gamma^(m_{k+1}) Y_{k+1}` over turns, and a token
    of turn k gets `gamma^(action tokens after it in the turn) * Y_k` (CREDIT.md 2.4, 10).
    """
    check_choice("reinforce++", "stats", stats, ("token", "turn"))
    dt = batch.rewards_BK.dtype
    r = torch.where(batch.turn_mask_BK, batch.rewards_BK, 0.0)
    if gamma == 1.0:  # every token of a turn carries RTG_1(r): stay in turn space
        return _whitened_turn_constant(batch, rtg(r, 1.0), stats, eps, recenter)
    lay = token_layout(batch)
    m = lay.m_BK.to(dt)
    K = batch.K
    g = torch.tensor(gamma, dtype=dt, device=r.device)
    Y = torch.zeros_like(r)
    nxt = torch.zeros_like(r[:, 0])
    for k in range(K - 1, -1, -1):
        nxt = r[:, k] + (g ** m[:, k + 1] if k + 1 < K else 0.0) * nxt
        Y[:, k] = nxt
    X_first_BK = Y * g ** (m - 1).clamp(min=0)  # return at each turn's first action token
    end_BK = (lay.act_before_BK + lay.m_BK).to(dt)  # action-token count through each turn's end
    after_BT = broadcast_to_tokens(end_BK, batch.token_turn_BT, None)
    after_BT -= (batch.token_turn_BT >= 0).cumsum(1, dtype=torch.int32).to(dt)
    after_BT.clamp_(min=0)
    X_BT = broadcast_to_tokens(Y, batch.token_turn_BT, batch.loss_mask_BT).mul_(g**after_BT)
    del after_BT
    if stats == "token":
        mu, inv, ok = whiten_stats(X_BT, batch.loss_mask_BT, eps)
    else:
        mu, inv, ok = whiten_turns(X_first_BK, batch.turn_mask_BK, eps)
    X_BT = ((X_BT - mu) if recenter else X_BT).mul_(inv * ok)
    turn_BK = ((X_first_BK - mu) if recenter else X_first_BK) * inv * ok
    return make_advantages(batch, turn_BK, X_BT)


def reinforce_pp_baseline_loop(batch: CreditBatch, eps: float = 1e-8, stats: str = "token", singleton: str = "raw",
                               recenter: bool = True) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    X = [[0.0] * batch.T for _ in eps_]
    Xturn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        if e.n == 0:
            continue
        c = z(e.R, [o.R for o in groups[e.g]], use_std=False, single=singleton)
        for k in range(e.n):
            Xturn[e.b][k] = c
        for t, _k in e.action_tokens():
            X[e.b][t] = c
    return _whiten_loop(batch, eps_, X, Xturn, eps, stats, recenter)


@register_estimator("reinforce++_baseline", loop=reinforce_pp_baseline_loop)
def reinforce_pp_baseline(
    batch: CreditBatch, *, eps: float = 1e-8, stats: str = "token", singleton: str = "raw", recenter: bool = True
) -> Advantages:
    """REINFORCE++-baseline (arXiv 2501.03262): group-centred outcome, then batch whitening (2.4)."""
    check_choice("reinforce++_baseline", "stats", stats, ("token", "turn"))
    check_choice("reinforce++_baseline", "singleton", singleton, SINGLETON_RULES)
    X_BK = _per_episode(batch, grpo_B(batch, norm_std=False, singleton=singleton))
    return _whitened_turn_constant(batch, X_BK, stats, eps, recenter)


# ---------------------------------------------------------------- remax (2.5)
def remax_loop(batch: CreditBatch) -> Advantages:
    return _per_episode_loop(batch, lambda e, G: e.R - (e.greedy or 0.0))


@register_estimator("remax", needs={"greedy": True}, loop=remax_loop)
def remax(batch: CreditBatch) -> Advantages:
    """ReMax (arXiv 2310.10505): `A = R[b] - greedy_return_B[b]`, a greedy rollout as baseline (2.5)."""
    greedy = require(
        "remax",
        batch,
        "greedy_return_B",
        "the greedy-rollout return",
        "collect with greedy_baseline=True (Episode.meta['greedy_return'])",
    )
    check_finite("remax", "greedy_return_B", greedy, batch.turn_mask_BK.any(1))
    adv_B = batch.outcome_B - torch.nan_to_num(greedy.to(batch.outcome_B.dtype))
    return make_advantages(batch, _per_episode(batch, adv_B))
