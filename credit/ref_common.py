"""Plain-Python helpers of the slow loop references (`creditgym.credit.reference`).

Everything here loops over episodes, turns and tokens with Python floats, written from
design/CREDIT.md and never calling the vectorised code. Used by the tests and timed by the benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import Advantages

__all__ = ["Ep", "episodes_of", "finish", "groups_of", "mean", "std", "z"]

ZERO_TOL = 1e-8


@dataclass
class Ep:
    """One episode of a batch as Python lists (valid turns only, tokens in slot order)."""

    b: int
    g: int
    n: int
    truncated: bool
    R: float
    r: list[float]
    state: list[int]
    node: list[int]
    probe: list[float] | None
    values: list[float] | None  # all K slots (the bootstrap column included)
    greedy: float | None
    tok_turn: list[int]
    loss: list[bool]
    tok_values: list[float] | None
    logprobs: list[float] | None


def _rows(x: torch.Tensor | None) -> list[Any] | None:
    return None if x is None else x.detach().cpu().double().tolist()


def episodes_of(batch: CreditBatch, token_values: bool = False, logprobs: bool = False) -> list[Ep]:
    """The batch as Python lists; `[B, T]` float rows are converted only when asked for."""
    n_B = batch.turn_mask_BK.sum(1).tolist()
    names = ["rewards_BK", "outcome_B", "probe_BK1", "values_BK", "greedy_return_B"]
    names += ["token_values_BT"] * token_values + ["logprobs_BT"] * logprobs
    rows = {name: _rows(getattr(batch, name)) for name in names}
    ids = {name: getattr(batch, name).tolist() for name in ("group_B", "state_BK", "node_BK", "token_turn_BT")}
    loss = batch.loss_mask_BT.tolist()
    trunc = batch.truncated_B.tolist()
    out = []
    for b in range(batch.B):
        n = int(n_B[b])

        def row(name: str, b: int = b) -> Any:
            r = rows.get(name)
            return None if r is None else r[b]

        out.append(
            Ep(
                b=b,
                g=int(ids["group_B"][b]),
                n=n,
                truncated=bool(trunc[b]),
                R=row("outcome_B"),
                r=row("rewards_BK")[:n],
                state=ids["state_BK"][b][:n],
                node=ids["node_BK"][b][:n],
                probe=row("probe_BK1"),
                values=row("values_BK"),
                greedy=row("greedy_return_B"),
                tok_turn=ids["token_turn_BT"][b],
                loss=[bool(x) for x in loss[b]],
                tok_values=row("token_values_BT"),
                logprobs=row("logprobs_BT"),
            )
        )
    return out


def groups_of(eps_: list[Ep]) -> dict[int, list[Ep]]:
    """Group id -> its episodes with at least one turn (G(b) of CREDIT.md 1.2)."""
    groups: dict[int, list[Ep]] = {}
    for e in eps_:
        if e.n > 0:
            groups.setdefault(e.g, []).append(e)
    return groups


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def std(xs: list[float], population: bool = False) -> float:
    if len(xs) <= 1:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) if population else len(xs) - 1))


def z(x: float, S: list[float], eps: float = 1e-6, use_std: bool = True, single: str = "zero", population: bool = False) -> float:
    """z(x; S) or center(x; S) with the singleton rule `single` ("raw" or "zero")."""
    if len(S) == 1:
        if single == "raw":
            return x / (1 + eps) if use_std else x
        return 0.0
    if all(s == S[0] for s in S):
        return 0.0
    c = x - mean(S)
    return c / (std(S, population) + eps) if use_std else c


def rtg(xs: list[float], gamma: float) -> list[float]:
    out, acc = [0.0] * len(xs), 0.0
    for k in range(len(xs) - 1, -1, -1):
        acc = xs[k] + gamma * acc
        out[k] = acc
    return out


def _metrics(eps_: list[Ep], turn: list[list[float]], token: list[list[float]]) -> dict[str, float]:
    vals = [turn[e.b][k] for e in eps_ for k in range(e.n)]
    toks = [token[e.b][t] for e in eps_ for t in range(len(e.loss)) if e.loss[t]]
    m: dict[str, float] = {
        "adv/frac_zero_tokens": sum(abs(x) <= ZERO_TOL for x in toks) / max(1, len(toks)),
        "adv/frac_zero_turns": sum(abs(x) <= ZERO_TOL for x in vals) / max(1, len(vals)),
        "adv/mean": mean(vals),
        "adv/std": std(vals),
        "adv/abs_max": max((abs(x) for x in vals), default=0.0),
    }
    groups = groups_of(eps_)
    num = len(groups)
    m["groups/num"] = float(num)
    m["groups/frac_singleton"] = sum(len(g) == 1 for g in groups.values()) / max(1, num)
    equal = 0
    for g in groups.values():
        Rs = [e.R for e in g]
        equal += len(g) >= 2 and max(Rs) - min(Rs) <= ZERO_TOL
    m["groups/frac_all_equal"] = equal / max(1, num)
    m["batch/frac_truncated"] = sum(e.truncated for e in eps_) / len(eps_)
    m["batch/mean_turns"] = sum(e.n for e in eps_) / len(eps_)
    K = len(turn[0]) if turn else 0
    for k in range(K):
        col = [turn[e.b][k] for e in eps_ if k < e.n]
        if col:
            m[f"adv/turn{k}/mean"] = mean(col)
            m[f"adv/turn{k}/std"] = std(col)
    return m


def broadcast(eps_: list[Ep], turn: list[list[float]]) -> list[list[float]]:
    """CREDIT.md 1.5 by loops."""
    return [
        [turn[e.b][k] if k >= 0 and e.loss[t] else 0.0 for t, k in enumerate(e.tok_turn)]
        for e in eps_
    ]


def finish(
    batch: CreditBatch,
    eps_: list[Ep],
    turn: list[list[float]],
    token: list[list[float]] | None = None,
    extras: dict[str, float] | None = None,
    **optional: list[list[float]] | None,
) -> Advantages:
    """Zero the padding, broadcast, compute the metrics by loops and pack tensors like the batch."""
    turn = [[turn[e.b][k] if k < e.n else 0.0 for k in range(batch.K)] for e in eps_]
    if token is None:
        token = broadcast(eps_, turn)
    else:
        token = [[x if e.loss[t] else 0.0 for t, x in enumerate(token[e.b])] for e in eps_]
    metrics = _metrics(eps_, turn, token)
    metrics.update(extras or {})
    dt, dev = batch.rewards_BK.dtype, batch.device

    def tens(x: list[list[float]] | None) -> torch.Tensor | None:
        return None if x is None else torch.tensor(x, dtype=dt, device=dev)

    kw = {name: tens(v) for name, v in optional.items()}
    return Advantages(tens(turn), tens(token), metrics, **kw)  # type: ignore[arg-type]
