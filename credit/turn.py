"""Turn-level estimators: turn_return, mt_grpo, a2tgpo, pure, rebn (CREDIT.md section 4).

Each section holds the loop reference (`*_loop`, CREDIT.md 9.1) and then the vectorised estimator.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import Advantages, make_advantages, make_advantages_loop
from creditgym.credit.group_stats import (
    SINGLETON_RULES,
    EpisodeGroups,
    episode_groups,
    episodes_of,
    flat_group_BK,
    group_loo,
    group_z,
    groups_of,
    loo,
    loo_baseline,
    mean,
    normalize,
    z,
)
from creditgym.credit.registry import check_choice, check_finite, register_estimator, require
from creditgym.credit.returns import rtg, rtg_loop, suffix_min

__all__ = [
    "a2tgpo", "info_gain_BK", "last_and_inner", "mt_grpo", "norm_turns", "probe_used_BK1", "pure", "rebn", "turn_return",
]  # fmt: skip

_HOW_GOLD = "run the Collector with probes=[GoldAnswerProbe()]"


def norm_turns(
    x_BK: Tensor, eg: EpisodeGroups, member_BK: Tensor, *, by_index: bool, use_std: bool = True, eps: float = 1e-6
) -> Tensor:
    """z (or center) of each member turn over its group's member turns at the same turn index
    (`by_index`) or pooled over all of them; sets of one give 0 (finer than an episode group, 1.2)."""
    B, K = x_BK.shape
    if by_index:
        k_BK = torch.arange(K, device=x_BK.device).expand(B, K)
        seg, S = flat_group_BK(eg.g_B, k_BK)
    else:
        seg, S = eg.g_B[:, None].expand(B, K).reshape(-1), eg.G
    out = normalize(x_BK.reshape(-1), seg, member_BK.reshape(-1).to(x_BK.dtype), S, use_std=use_std, eps=eps)
    return out.view(B, K)


def _masked(x_BK: Tensor, mask_BK: Tensor) -> Tensor:
    return torch.where(mask_BK, x_BK, torch.zeros_like(x_BK))


def last_and_inner(batch: CreditBatch) -> tuple[Tensor, Tensor, Tensor]:
    """n_B, the last-turn mask and the mask of turns before the last (`k < n_b - 1`)."""
    n_B = batch.turn_mask_BK.sum(1)
    k = torch.arange(batch.K, device=batch.device)
    return n_B, k[None, :] == (n_B[:, None] - 1), k[None, :] < (n_B[:, None] - 1)


# ---------------------------------------------------------------- turn_return (4.1)
def turn_return_loop(batch: CreditBatch, gamma: float = 1.0, norm: str = "turn_index", use_std: bool = True,
                     eps: float = 1e-6) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    X = {e.b: rtg_loop(e.r, gamma) for e in eps_}
    turn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        for k in range(e.n):
            if norm == "turn_index":
                S = [X[o.b][k] for o in groups[e.g] if k < o.n]
            else:
                S = [x for o in groups[e.g] for x in X[o.b]]
            turn[e.b][k] = z(X[e.b][k], S, eps, use_std)
    return make_advantages_loop(batch, eps_, turn)


@register_estimator("turn_return", loop=turn_return_loop)
def turn_return(
    batch: CreditBatch, *, gamma: float = 1.0, norm: str = "turn_index", use_std: bool = True, eps: float = 1e-6
) -> Advantages:
    """Group-normalised discounted turn returns (CREDIT.md 4.1; cf. GTPO arXiv 2511.14846)."""
    check_choice("turn_return", "norm", norm, ("turn_index", "pooled"))
    mask = batch.turn_mask_BK
    X = rtg(_masked(batch.rewards_BK, mask), gamma)
    A = norm_turns(X, episode_groups(batch), mask, by_index=norm == "turn_index", use_std=use_std, eps=eps)
    return make_advantages(batch, A)


# ---------------------------------------------------------------- mt_grpo (4.2)
def mt_grpo_loop(batch: CreditBatch, lam: float = 1.0, mode: str = "aae", gamma: float = 1.0,
                 outcome: str = "last_turn", singleton: str = "raw", eps: float = 1e-6) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    RO = {e.b: (e.r[e.n - 1] if outcome == "last_turn" else e.R) for e in eps_ if e.n}
    C: dict[int, list[float]] = {}
    for e in eps_:
        C[e.b] = [
            sum(gamma ** (j - k) * e.r[j] for j in range(k, e.n - 1)) + gamma ** (e.n - 1 - k) * RO[e.b]
            for k in range(e.n - 1)
        ]
    turn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        if not e.n:
            continue
        G = groups[e.g]
        A_O = z(RO[e.b], [RO[o.b] for o in G], eps, single=singleton)
        for k in range(e.n - 1):
            if mode == "aae":
                S = [o.r[k] for o in G if k < o.n - 1]
                turn[e.b][k] = A_O + lam * z(e.r[k], S, eps)
            else:
                turn[e.b][k] = z(C[e.b][k], [C[o.b][k] for o in G if k < o.n - 1], eps)
        turn[e.b][e.n - 1] = A_O
    return make_advantages_loop(batch, eps_, turn)


@register_estimator("mt_grpo", loop=mt_grpo_loop)
def mt_grpo(
    batch: CreditBatch,
    *,
    lam: float = 1.0,
    mode: str = "aae",
    gamma: float = 1.0,
    outcome: str = "last_turn",
    singleton: str = "raw",
    eps: float = 1e-6,
) -> Advantages:
    """Multi-Turn GRPO (arXiv 2505.11821) generalised to K turns: outcome z plus turn-level z (4.2)."""
    check_choice("mt_grpo", "mode", mode, ("aae", "cae"))
    check_choice("mt_grpo", "outcome", outcome, ("last_turn", "outcome_B"))
    check_choice("mt_grpo", "singleton", singleton, SINGLETON_RULES)
    mask = batch.turn_mask_BK
    r = _masked(batch.rewards_BK, mask)
    n_B, last, inner = last_and_inner(batch)
    eg = episode_groups(batch)
    if outcome == "last_turn":
        RO_B = r.gather(1, (n_B - 1).clamp(min=0)[:, None])[:, 0]
    else:
        RO_B = batch.outcome_B.to(r.dtype)
    A_O = group_z(RO_B, eg, eps=eps, singleton=singleton)
    if mode == "aae":
        A_inner = A_O[:, None] + lam * norm_turns(r, eg, inner, by_index=True, eps=eps)
    else:
        k = torch.arange(batch.K, device=r.device, dtype=r.dtype)
        steps = (n_B[:, None].to(r.dtype) - 1 - k).clamp(min=0)
        C = rtg(_masked(r, inner), gamma) + gamma**steps * RO_B[:, None]
        A_inner = norm_turns(C, eg, inner, by_index=True, eps=eps)
    A = torch.where(inner, A_inner, A_O[:, None].expand_as(A_inner))
    return make_advantages(batch, A)


# ---------------------------------------------------------------- a2tgpo (4.3)
def probe_used_BK1(batch: CreditBatch, through_last: bool) -> Tensor:
    """Probe slots an estimator reads: `j <= n_b - 1` (or `j <= n_b`) for episodes of >= 2 turns."""
    n_B = batch.turn_mask_BK.sum(1)
    j = torch.arange(batch.K + 1, device=batch.device)
    lim = n_B[:, None] if through_last else n_B[:, None] - 1
    return (j[None, :] <= lim) & (n_B[:, None] >= 2)


def info_gain_BK(name: str, batch: CreditBatch) -> tuple[Tensor, Tensor]:
    """`IG[b,k] = probe[b,k+1] - probe[b,k]` at turns before the last (0 elsewhere) and that mask."""
    probe = require(name, batch, "probe_BK1", "probe values", _HOW_GOLD)
    check_finite(name, "probe_BK1", probe, probe_used_BK1(batch, through_last=False))
    _, _, inner = last_and_inner(batch)
    p = probe.to(batch.rewards_BK.dtype)
    return torch.where(inner, p[:, 1:] - p[:, :-1], 0.0), inner


def a2tgpo_loop(batch: CreditBatch, gamma: float = 1.0, beta: float = 0.3, singleton: str = "raw",
                eps: float = 1e-6) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    IG = {e.b: [e.probe[k + 1] - e.probe[k] for k in range(e.n - 1)] for e in eps_ if e.probe is not None}
    turn = [[0.0] * batch.K for _ in eps_]
    clip = [[1.0] * batch.K for _ in eps_]
    scales = []
    for e in eps_:
        if not e.n:
            continue
        G = groups[e.g]
        Z = [z(IG[e.b][k], [IG[o.b][k] for o in G if k < o.n - 1], eps) for k in range(e.n - 1)]
        Z.append(z(e.R, [o.R for o in G], eps, single=singleton))
        acc = rtg_loop(Z, gamma)
        for k in range(e.n):
            turn[e.b][k] = acc[k] / math.sqrt(e.n - k)
            clip[e.b][k] = 1 + beta * (2 / (1 + math.exp(-Z[k])) - 1)
            scales.append(clip[e.b][k])
    extras = {
        "a2tgpo/clip_scale_min": min(scales, default=1.0),
        "a2tgpo/clip_scale_mean": mean(scales) if scales else 1.0,
        "a2tgpo/clip_scale_max": max(scales, default=1.0),
    }
    return make_advantages_loop(batch, eps_, turn, None, extras, clip_scale_BK=clip)


@register_estimator("a2tgpo", needs={"probe": "gold"}, loop=a2tgpo_loop)
def a2tgpo(
    batch: CreditBatch, *, gamma: float = 1.0, beta: float = 0.3, singleton: str = "raw", eps: float = 1e-6
) -> Advantages:
    """A^2TGPO (arXiv 2605.06200): turn-group-normalised information gain, rescaled accumulation
    and per-turn clip scales `1 + beta * tanh(Z / 2)` (CREDIT.md 4.3)."""
    check_choice("a2tgpo", "singleton", singleton, SINGLETON_RULES)
    mask = batch.turn_mask_BK
    IG, inner = info_gain_BK("a2tgpo", batch)
    _, last, _ = last_and_inner(batch)
    eg = episode_groups(batch)
    Z_last = group_z(batch.outcome_B.to(IG.dtype), eg, eps=eps, singleton=singleton)
    Z = torch.where(inner, norm_turns(IG, eg, inner, by_index=True, eps=eps), 0.0)
    Z = torch.where(last, Z_last[:, None].expand_as(Z), Z)
    n_B = mask.sum(1)
    k = torch.arange(batch.K, device=Z.device, dtype=Z.dtype)
    terms = (n_B[:, None].to(Z.dtype) - k).clamp(min=1)
    A = rtg(Z, gamma) / terms.sqrt()
    clip = torch.where(mask, 1 + beta * torch.tanh(Z / 2), 1.0)
    cm = torch.where(mask, clip, float("inf"))
    has = mask.any()
    extras = {
        "a2tgpo/clip_scale_min": torch.where(has, cm.amin(), 1.0),
        "a2tgpo/clip_scale_mean": (torch.where(mask, clip, 0.0).sum() + (~has)) / mask.sum().clamp(min=1),
        "a2tgpo/clip_scale_max": torch.where(has, torch.where(mask, clip, float("-inf")).amax(), 1.0),
    }
    return make_advantages(batch, A, extras=extras, clip_scale_BK=clip)


# ---------------------------------------------------------------- pure (4.4)
def pure_loop(batch: CreditBatch, form: str = "softmin", temperature: float = 0.1, vr_coef: float = 0.0,
              singleton: str = "raw") -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    star, m, M = {}, {}, {}
    for e in eps_:
        if not e.n:
            continue
        top = max(-x / temperature for x in e.r)
        ws = [math.exp(-x / temperature - top) for x in e.r]
        star[e.b] = [w / sum(ws) * x for w, x in zip(ws, e.r)]
        m[e.b] = sum(star[e.b]) / e.n
        M[e.b] = [min(e.r[k:]) for k in range(e.n)]
    turn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        if not e.n:
            continue
        others = [o for o in groups[e.g] if o.b != e.b]
        if not others and singleton == "zero":
            continue
        vr = vr_coef * loo(e, groups[e.g], "raw") if vr_coef else 0.0
        for k in range(e.n):
            if form == "softmin":
                base = mean([m[o.b] for o in others])
                turn[e.b][k] = sum(x - base for x in star[e.b][k:]) + vr
            else:
                turn[e.b][k] = M[e.b][k] - mean([M[o.b][0] for o in others]) + vr
    mins = [min(e.r) for e in eps_ if e.n]
    return make_advantages_loop(batch, eps_, turn, None, {"pure/mean_min_reward": mean(mins)})


@register_estimator("pure", loop=pure_loop)
def pure(
    batch: CreditBatch,
    *,
    form: str = "softmin",
    temperature: float = 0.1,
    vr_coef: float = 0.0,
    singleton: str = "raw",
) -> Advantages:
    """PURE min-form credit (arXiv 2504.15275): softmin-weighted process rewards with a leave-one-out
    per-turn baseline, or the exact suffix minimum; optional verifiable-reward term (CREDIT.md 4.4)."""
    check_choice("pure", "form", form, ("softmin", "exact"))
    check_choice("pure", "singleton", singleton, SINGLETON_RULES)
    mask = batch.turn_mask_BK
    check_finite("pure", "rewards_BK", batch.rewards_BK, mask)
    r = _masked(batch.rewards_BK, mask)
    eg = episode_groups(batch)
    w_B = eg.has_B.to(r.dtype)
    n_B = mask.sum(1).to(r.dtype)
    if form == "softmin":
        w = torch.softmax(torch.where(mask, -r / temperature, float("-inf")), 1)
        r_star = torch.where(mask, w, 0.0) * r
        m_B = r_star.sum(1) / n_B.clamp(min=1)
        base, single = loo_baseline(m_B, eg.g_B, w_B, eg.G)
        k = torch.arange(batch.K, device=r.device, dtype=r.dtype)
        A = rtg(r_star, 1.0) - (n_B[:, None] - k) * base[:, None]
    else:
        M = suffix_min(r, mask)
        base, single = loo_baseline(M[:, 0], eg.g_B, w_B, eg.G)
        A = M - base[:, None]
    if vr_coef:
        A = A + vr_coef * group_loo(batch.outcome_B.to(r.dtype), eg, "raw")[:, None]
    if singleton == "zero":
        A = torch.where(single[:, None], 0.0, A)
    min_B = suffix_min(r, mask)[:, 0]
    extras = {"pure/mean_min_reward": (min_B * w_B).sum() / w_B.sum().clamp(min=1)}
    return make_advantages(batch, A, extras=extras)


# ---------------------------------------------------------------- rebn (4.5)
def rebn_loop(batch: CreditBatch, gamma: float = 0.9, eps: float = 1e-6, std: str = "unbiased") -> Advantages:
    eps_ = episodes_of(batch)
    G = {e.b: rtg_loop(e.r, gamma) for e in eps_}
    pool = [x for e in eps_ for x in G[e.b]]
    turn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        for k in range(e.n):
            turn[e.b][k] = z(G[e.b][k], pool, eps, population=std == "population")
    return make_advantages_loop(batch, eps_, turn)


@register_estimator("rebn", loop=rebn_loop)
def rebn(batch: CreditBatch, *, gamma: float = 0.9, eps: float = 1e-6, std: str = "unbiased") -> Advantages:
    """GEM's REINFORCE with return batch normalisation (arXiv 2510.01051): discounted turn returns
    z-scored over every valid turn of the batch (CREDIT.md 4.5)."""
    check_choice("rebn", "std", std, ("unbiased", "population"))
    mask = batch.turn_mask_BK
    G = rtg(_masked(batch.rewards_BK, mask), gamma)
    seg = torch.zeros(G.numel(), dtype=torch.int64, device=G.device)
    A = normalize(G.reshape(-1), seg, mask.reshape(-1).to(G.dtype), 1, eps=eps, population=std == "population")
    return make_advantages(batch, A.view_as(G))
