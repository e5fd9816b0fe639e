"""Loop references of gigpo, tree, tree_grpo, vineppo, spo, igpo, siop and pvd (see `reference`)."""

from __future__ import annotations

import math
from collections.abc import Callable

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import Advantages
from creditgym.credit.ref_common import Ep, episodes_of, finish, groups_of, mean, rtg, z

__all__ = ["REFERENCES_MORE"]


def ref_gigpo(batch: CreditBatch, gamma: float = 0.95, omega: float = 1.0, norm: str = "mean",
              episode_stats: str = "steps", singleton: str = "raw", eps: float = 1e-6) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    use_std = norm == "std"
    X = {e.b: rtg(e.r, gamma) for e in eps_}
    anchors: dict[tuple[int, int], list[float]] = {}
    for e in eps_:
        for k in range(e.n):
            anchors.setdefault((e.g, e.state[k]), []).append(X[e.b][k])
    turn = [[0.0] * batch.K for _ in eps_]
    shares, singles = [], 0
    for e in eps_:
        if not e.n:
            continue
        G = groups[e.g]
        E = [o.R for o in G for _ in range(o.n)] if episode_stats == "steps" else [o.R for o in G]
        A_E = z(e.R, E, eps, use_std, singleton)
        for k in range(e.n):
            S = anchors[(e.g, e.state[k])]
            singles += len(S) == 1
            A_S = z(X[e.b][k], S, eps, use_std)
            turn[e.b][k] = A_E + omega * A_S
            den = abs(A_E) + abs(omega * A_S)
            shares.append(abs(omega * A_S) / den if den > 0 else 0.0)
    sizes = [len(v) for v in anchors.values()]
    extras = {f"gigpo/anchor_size_frac/{s}": sum(x == s for x in sizes) / max(1, len(sizes)) for s in range(1, 9)}
    extras["gigpo/anchor_size_frac/9+"] = sum(x > 8 for x in sizes) / max(1, len(sizes))
    extras["gigpo/frac_steps_singleton"] = singles / max(1, sum(e.n for e in eps_))
    extras["gigpo/step_share"] = mean(shares)
    return finish(batch, eps_, turn, None, extras)


class _Tree:
    """Node values V(n) = mean of u over the leaves under n, and the group roots (CREDIT.md 6.1)."""

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


def ref_tree(batch: CreditBatch, form: str = "tempo", beta: float = 1.0, leaf: str | None = None,
             singleton: str = "raw", eps: float = 1e-6) -> Advantages:  # fmt: skip
    leaf = leaf or ("grpo" if form == "tempo" else "raw")
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    A_ep = {e.b: z(e.R, [o.R for o in groups[e.g]], eps, leaf == "grpo", singleton) for e in eps_ if e.n}
    u = A_ep if leaf == "grpo" else {e.b: e.R for e in eps_}
    tr = _Tree(eps_, groups, u)
    turn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        for k in range(e.n):
            V = tr.V(e.node[k])
            if form == "tempo":
                turn[e.b][k] = A_ep[e.b] + (beta * (V - tr.par(e, k)) if k >= 1 else 0.0)
            else:
                L = len(tr.leaves[e.node[k]])
                turn[e.b][k] = ((V - tr.root[e.g]) + (V - tr.par(e, k))) / math.sqrt(L)
    return finish(batch, eps_, turn, None, tr.metrics())


def ref_tree_grpo(batch: CreditBatch, eps: float = 1e-6, intra_weight: float = 1.0,
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
    tr = _Tree(eps_, groups, {e.b: e.R for e in eps_})
    return finish(batch, eps_, turn, None, tr.metrics())


def _mc(e: Ep, gamma: float, bootstrap: bool) -> list[float]:
    assert e.values is not None
    out = []
    for k in range(e.n):
        if k + 1 < e.n:
            nxt = e.values[k + 1]
        else:
            nxt = e.values[e.n] if (bootstrap and e.truncated) else 0.0
        out.append(e.r[k] + gamma * nxt - e.values[k])
    return out


def ref_vineppo(batch: CreditBatch, gamma: float = 1.0, bootstrap_truncated: bool = False) -> Advantages:
    eps_ = episodes_of(batch)
    turn = [_mc(e, gamma, bootstrap_truncated) + [0.0] * (batch.K - e.n) for e in eps_]
    return finish(batch, eps_, turn)


def ref_spo(batch: CreditBatch, variant: str = "chain", gamma: float = 1.0, bootstrap_truncated: bool = False,
            prob_mask: bool = False, rho: float = 0.9) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch, logprobs=prob_mask)
    extras: dict[str, float] = {}
    if variant == "chain":
        turn = [_mc(e, gamma, bootstrap_truncated) + [0.0] * (batch.K - e.n) for e in eps_]
    else:
        tr = _Tree(eps_, groups_of(eps_), {e.b: e.R for e in eps_})
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
    return finish(batch, eps_, turn, token, extras)


def _pooled_rtg(batch: CreditBatch, eps_: list[Ep], r: dict[int, list[float]], gamma: float, use_std: bool,
                eps: float, pool_key: Callable[[Ep, int], object]) -> list[list[float]]:  # fmt: skip
    groups = groups_of(eps_)
    turn = [[0.0] * batch.K for _ in eps_]
    for e in eps_:
        if not e.n:
            continue
        Z = []
        for k in range(e.n):
            S = [r[o.b][j] for o in groups[e.g] for j in range(o.n) if pool_key(o, j) == pool_key(e, k)]
            Z.append(z(r[e.b][k], S, eps, use_std))
        turn[e.b][: e.n] = rtg(Z, gamma)
    return turn


def ref_igpo(batch: CreditBatch, gamma: float = 1.0, norm: str = "joint", use_std: bool = True,
             eps: float = 1e-6) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    r: dict[int, list[float]] = {}
    igs = []
    for e in eps_:
        assert e.probe is not None
        ig = [e.probe[k + 1] - e.probe[k] for k in range(e.n - 1)]
        igs += ig
        r[e.b] = [*ig, e.R] if e.n else []
    key = (lambda e, k: 0) if norm == "joint" else (lambda e, k: k == e.n - 1)
    turn = _pooled_rtg(batch, eps_, r, gamma, use_std, eps, key)
    extras = {"igpo/ig_mean": mean(igs), "igpo/frac_negative_ig": sum(x < 0 for x in igs) / max(1, len(igs))}
    return finish(batch, eps_, turn, None, extras)


def ref_siop(batch: CreditBatch, lam: float = 0.5, gamma: float = 1.0, gamma_phi: float = 1.0,
             use_std: bool = True, eps: float = 1e-6) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    r: dict[int, list[float]] = {}
    for e in eps_:
        if e.n == 1:
            r[e.b] = [(1 - lam) * e.R]
            continue
        assert e.probe is not None
        F = [gamma_phi * e.probe[k + 1] - e.probe[k] for k in range(e.n)]
        r[e.b] = [F[k] + ((1 - lam) * e.R if k == e.n - 1 else 0.0) for k in range(e.n)]
    turn = _pooled_rtg(batch, eps_, r, gamma, use_std, eps, lambda e, k: 0)
    return finish(batch, eps_, turn)


def ref_pvd(batch: CreditBatch, gamma: float = 1.0, prior: float = 32.0, outcome_weight: float = 0.0, key: str = "abstract",
            bootstrap_truncated: bool = False, singleton: str = "raw", eps: float = 1e-6) -> Advantages:  # fmt: skip
    eps_ = episodes_of(batch)
    groups = groups_of(eps_)
    use_abs = key == "abstract" and batch.abstract_BK1 is not None
    zrows = batch.abstract_BK1.tolist() if use_abs and batch.abstract_BK1 is not None else None
    zs = {e.b: (zrows[e.b][: e.n + 1] if zrows is not None else [*e.state, -1]) for e in eps_}
    X = {e.b: rtg(e.r, gamma) for e in eps_}
    by_z: dict[int, list[float]] = {}
    by_gz: dict[tuple[int, int], list[float]] = {}
    for e in eps_:
        for k in range(e.n):
            by_z.setdefault(zs[e.b][k], []).append(X[e.b][k])
            by_gz.setdefault((e.g, zs[e.b][k]), []).append(X[e.b][k])

    def V(g: int, zz: int) -> float:
        if zz < 0 or zz not in by_z:
            return 0.0
        own, M = by_gz.get((g, zz), []), mean(by_z[zz])
        return (sum(own) + prior * M) / (len(own) + prior) if len(own) + prior > 0 else M

    turn = [[0.0] * batch.K for _ in eps_]
    pooled = cells = 0.0
    for e in eps_:
        A_E = 0.0
        if outcome_weight and e.n:
            A_E = z(e.R, [o.R for o in groups[e.g]], eps, True, singleton)
        for k in range(e.n):
            last = k == e.n - 1
            v_next = V(e.g, zs[e.b][k + 1]) if (not last or (e.truncated and bootstrap_truncated)) else 0.0
            turn[e.b][k] = e.r[k] + gamma * v_next - V(e.g, zs[e.b][k]) + outcome_weight * A_E
            size = len(by_gz[(e.g, zs[e.b][k])])
            pooled += size >= 2
            cells += size
    n = max(1, sum(e.n for e in eps_))
    boot = sum(1 for e in eps_ if e.n and e.truncated and bootstrap_truncated)
    extras = {"pvd/frac_turns_pooled": pooled / n, "pvd/mean_cell_size": cells / n,
              "pvd/frac_bootstrapped": boot / max(1, sum(1 for e in eps_ if e.n))}  # fmt: skip
    return finish(batch, eps_, turn, None, extras)


REFERENCES_MORE: dict[str, Callable[..., Advantages]] = {
    "gigpo": ref_gigpo,
    "tree": ref_tree,
    "tree_grpo": ref_tree_grpo,
    "vineppo": ref_vineppo,
    "spo": ref_spo,
    "igpo": ref_igpo,
    "siop": ref_siop,
    "pvd": ref_pvd,
}

