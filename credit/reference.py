"""Slow per-episode Python loop references of every estimator (CREDIT.md 9.1).

`REFERENCES[name](batch, **cfg) -> Advantages` mirrors `ESTIMATORS` with explicit loops over
episodes, groups, turns and tokens, written from design/CREDIT.md; it never calls the vectorised
code. The tests compare the two; `creditgym bench credit` times both.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from creditgym.batch import CreditBatch
from creditgym.credit import reference_more as _more
from creditgym.credit.advantages import Advantages
from creditgym.credit.ref_common import Ep, episodes_of, finish, groups_of, mean, rtg, z

__all__ = ["REFERENCES"]


def _episode_adv(batch: CreditBatch, fn: Callable[[Ep, list[Ep]], float]) -> Advantages:
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    turn = [[fn(e, groups[e.g]) if e.n else 0.0] * batch.K for e in eps_]
    return finish(batch, eps_, turn)


def ref_grpo(batch: CreditBatch, norm_std: bool = True, eps: float = 1e-6, singleton: str = "raw") -> Advantages:
    return _episode_adv(batch, lambda e, G: z(e.R, [o.R for o in G], eps, norm_std, singleton))


def ref_dr_grpo(batch: CreditBatch, singleton: str = "raw") -> Advantages:
    return ref_grpo(batch, norm_std=False, singleton=singleton)


def _loo(e: Ep, G: list[Ep], single: str) -> float:
    others = [o.R for o in G if o.b != e.b]
    if not others:
        return e.R if single == "raw" else 0.0
    return e.R - mean(others)


def ref_rloo(batch: CreditBatch, singleton: str = "raw") -> Advantages:
    return _episode_adv(batch, lambda e, G: _loo(e, G, singleton))


def ref_remax(batch: CreditBatch) -> Advantages:
    return _episode_adv(batch, lambda e, G: e.R - (e.greedy or 0.0))


def _action_tokens(e: Ep) -> list[tuple[int, int]]:
    return [(t, k) for t, k in enumerate(e.tok_turn) if k >= 0]


def _whiten(batch: CreditBatch, eps_: list[Ep], X: list[list[float]], Xturn: list[list[float]],
            eps: float, stats: str, recenter: bool) -> Advantages:  # fmt: skip
    if stats == "token":
        pool = [X[e.b][t] for e in eps_ for t in range(len(e.loss)) if e.loss[t]]
    else:
        pool = [Xturn[e.b][k] for e in eps_ for k in range(e.n)]
    if len(pool) < 2:
        return finish(batch, eps_, [[0.0] * batch.K for _ in eps_], [[0.0] * batch.T for _ in eps_])
    mu = mean(pool)
    sd = math.sqrt(sum((x - mu) ** 2 for x in pool) / (len(pool) - 1) + eps)
    shift = mu if recenter else 0.0
    token = [[(x - shift) / sd for x in X[e.b]] for e in eps_]
    turn = [[(x - shift) / sd for x in Xturn[e.b]] for e in eps_]
    return finish(batch, eps_, turn, token)


def ref_reinforce_pp(batch: CreditBatch, gamma: float = 1.0, eps: float = 1e-8, stats: str = "token",
                     recenter: bool = True) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    X = [[0.0] * batch.T for _ in eps_]
    Xturn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        acts = _action_tokens(e)
        acc = 0.0
        for i in range(len(acts) - 1, -1, -1):
            t, k = acts[i]
            is_last = i == len(acts) - 1 or acts[i + 1][1] != k
            acc = (e.r[k] if is_last else 0.0) + gamma * acc
            X[e.b][t] = acc
            if i == 0 or acts[i - 1][1] != k:
                Xturn[e.b][k] = acc
    return _whiten(batch, eps_, X, Xturn, eps, stats, recenter)


def ref_reinforce_pp_baseline(batch: CreditBatch, eps: float = 1e-8, stats: str = "token", singleton: str = "raw",
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
        for t, _k in _action_tokens(e):
            X[e.b][t] = c
    return _whiten(batch, eps_, X, Xturn, eps, stats, recenter)


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
    acts = _action_tokens(e)
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


def ref_gae(batch: CreditBatch, level: str = "token", gamma: float = 1.0, lam: float = 0.95,
            bootstrap_truncated: bool = True, whiten: bool = True, gamma_token: float = 1.0,
            lam_token: float = 1.0) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch, token_values=level != "turn")
    turn = [[0.0] * batch.K for _ in eps_]
    token = [[0.0] * batch.T for _ in eps_]
    ret_K = [[0.0] * batch.K for _ in eps_]
    ret_T = [[0.0] * batch.T for _ in eps_]
    for e in eps_:
        boot = _boot(e, bootstrap_truncated)
        acts = _action_tokens(e)
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
    return finish(batch, eps_, turn, token, {"gae/frac_bootstrapped": used}, returns_BK=ret_K, returns_BT=ret_T)


def ref_turn_return(batch: CreditBatch, gamma: float = 1.0, norm: str = "turn_index", use_std: bool = True,
                    eps: float = 1e-6) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    X = {e.b: rtg(e.r, gamma) for e in eps_}
    turn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        for k in range(e.n):
            if norm == "turn_index":
                S = [X[o.b][k] for o in groups[e.g] if k < o.n]
            else:
                S = [x for o in groups[e.g] for x in X[o.b]]
            turn[e.b][k] = z(X[e.b][k], S, eps, use_std)
    return finish(batch, eps_, turn)


def ref_mt_grpo(batch: CreditBatch, lam: float = 1.0, mode: str = "aae", gamma: float = 1.0,
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
    return finish(batch, eps_, turn)


def ref_a2tgpo(batch: CreditBatch, gamma: float = 1.0, beta: float = 0.3, singleton: str = "raw",
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
        acc = rtg(Z, gamma)
        for k in range(e.n):
            turn[e.b][k] = acc[k] / math.sqrt(e.n - k)
            clip[e.b][k] = 1 + beta * (2 / (1 + math.exp(-Z[k])) - 1)
            scales.append(clip[e.b][k])
    extras = {
        "a2tgpo/clip_scale_min": min(scales, default=1.0),
        "a2tgpo/clip_scale_mean": mean(scales) if scales else 1.0,
        "a2tgpo/clip_scale_max": max(scales, default=1.0),
    }
    return finish(batch, eps_, turn, None, extras, clip_scale_BK=clip)


def ref_pure(batch: CreditBatch, form: str = "softmin", temperature: float = 0.1, vr_coef: float = 0.0,
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
        vr = vr_coef * _loo(e, groups[e.g], "raw") if vr_coef else 0.0
        for k in range(e.n):
            if form == "softmin":
                base = mean([m[o.b] for o in others])
                turn[e.b][k] = sum(x - base for x in star[e.b][k:]) + vr
            else:
                turn[e.b][k] = M[e.b][k] - mean([M[o.b][0] for o in others]) + vr
    mins = [min(e.r) for e in eps_ if e.n]
    return finish(batch, eps_, turn, None, {"pure/mean_min_reward": mean(mins)})


def ref_rebn(batch: CreditBatch, gamma: float = 0.9, eps: float = 1e-6, std: str = "unbiased") -> Advantages:
    eps_ = episodes_of(batch)
    G = {e.b: rtg(e.r, gamma) for e in eps_}
    pool = [x for e in eps_ for x in G[e.b]]
    turn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        for k in range(e.n):
            turn[e.b][k] = z(G[e.b][k], pool, eps, population=std == "population")
    return finish(batch, eps_, turn)


REFERENCES: dict[str, Callable[..., Advantages]] = {
    "grpo": ref_grpo,
    "dr_grpo": ref_dr_grpo,
    "rloo": ref_rloo,
    "reinforce++": ref_reinforce_pp,
    "reinforce++_baseline": ref_reinforce_pp_baseline,
    "remax": ref_remax,
    "gae": ref_gae,
    "turn_return": ref_turn_return,
    "mt_grpo": ref_mt_grpo,
    "a2tgpo": ref_a2tgpo,
    "pure": ref_pure,
    "rebn": ref_rebn,
    **_more.REFERENCES_MORE,
}
