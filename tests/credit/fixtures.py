"""Fixture F of CREDIT.md 1.7, a dtype cast helper, and the hypothesis strategy `credit_batches`."""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import strategies as st

from creditgym.batch import CreditBatch
from creditgym.trajectory import Episode, Turn

# ---------------------------------------------------------------- fixture F (CREDIT.md 1.7)
F_ROWS = [
    # group, n, truncated, rewards, states, nodes, probe (n+1), values (with bootstrap for ep 1)
    (0, 3, False, [0, 0.5, 1], [0, 1, 2], [10, 11, 12], [0.1, 0.2, 0.6, 0.9], [1, 1.25, 1]),
    (0, 2, True, [0.5, 0], [0, 1], [20, 21], [0.1, 0.3, 0.2], [1, 0.5, 0.25]),
    (0, 3, False, [0, 0, 1], [0, 1, 2], [10, 13, 14], [0.1, 0.2, 0.4, 0.5], [1, 1.25, 0.75]),
    (1, 2, False, [0, 1], [4, 5], [30, 31], [0.2, 0.5, 0.8], [0.5, 1]),
    (1, 1, False, [0], [4], [40], [0.2, 0.1], [0.5]),
]


def fixture_F() -> CreditBatch:
    """B = 5, K = 3, T = 9: turn k is one observation token then two action tokens (slots 3k..3k+2)."""
    B, K, T = 5, 3, 9
    rewards = torch.zeros(B, K)
    mask = torch.zeros(B, K, dtype=torch.bool)
    state = torch.full((B, K), -1, dtype=torch.int64)
    node = torch.full((B, K), -1, dtype=torch.int64)
    probe = torch.zeros(B, K + 1)
    values = torch.zeros(B, K)
    tt = torch.full((B, T), -1, dtype=torch.int64)
    group = torch.zeros(B, dtype=torch.int64)
    trunc = torch.zeros(B, dtype=torch.bool)
    for b, (g, n, tr, r, s, nd, p, v) in enumerate(F_ROWS):
        group[b], trunc[b] = g, tr
        rewards[b, :n] = torch.tensor(r, dtype=torch.float32)
        mask[b, :n] = True
        state[b, :n] = torch.tensor(s)
        node[b, :n] = torch.tensor(nd)
        probe[b, : n + 1] = torch.tensor(p)
        values[b, : len(v)] = torch.tensor(v, dtype=torch.float32)
        for k in range(n):
            tt[b, 3 * k + 1 : 3 * k + 3] = k
    batch = CreditBatch(
        rewards_BK=rewards,
        turn_mask_BK=mask,
        outcome_B=rewards.sum(1),
        group_B=group,
        state_BK=state,
        node_BK=node,
        terminated_B=~trunc,
        truncated_B=trunc,
        token_turn_BT=tt,
        loss_mask_BT=tt >= 0,
        probe_BK1=probe,
        values_BK=values,
    )
    batch.validate()
    return batch


def cast(batch: CreditBatch, dtype: torch.dtype) -> CreditBatch:
    """A copy with every floating tensor in `dtype`."""
    changes = {
        f.name: getattr(batch, f.name).to(dtype)
        for f in dataclasses.fields(batch)
        if isinstance(getattr(batch, f.name), torch.Tensor) and getattr(batch, f.name).is_floating_point()
    }
    return dataclasses.replace(batch, **changes)


# ---------------------------------------------------------------- hypothesis strategy (CREDIT.md 9)
_TIES = (-1.0, -0.5, 0.0, 0.5, 1.0)


@st.composite
def _value(draw: st.DrawFn, lo: float = -1.0, hi: float = 1.0) -> float:
    if draw(st.booleans()):
        return draw(st.sampled_from([x for x in _TIES if lo <= x <= hi]))
    return round(draw(st.floats(lo, hi, allow_nan=False, allow_subnormal=False)), 3)


@st.composite
def _turn(draw: st.DrawFn, uid: int) -> Turn:
    n_obs = draw(st.integers(0, 2))
    n_act = draw(st.integers(1, 3))
    lm = [draw(st.sampled_from([0, 1, 1])) for _ in range(n_act)]
    return Turn(
        obs_ids=[7] * n_obs,
        action_ids=[1000 + uid] + [5] * (n_act - 1),
        action_logprobs=[draw(st.sampled_from([-3.0, -0.5, -0.05, 0.0])) for _ in range(n_act)],
        action_loss_mask=lm,
        reward=draw(_value()),
        state_key=draw(st.sampled_from("abc")),
        probe={"gold": draw(_value(0.0, 1.0))},
        info={"v": draw(_value()), "tv": [draw(_value()) for _ in range(n_act)]},
    )


@st.composite
def credit_batches(draw: st.DrawFn, max_B: int = 12, max_K: int = 5, dtype: torch.dtype = torch.float64):
    """Random batches: groups of 1-4 (two roles in a group possible), 0-K turns, terminated or
    truncated with the bootstrap column, ties, colliding states, shared prefixes with identical
    per-turn data, 0-2 observation and 1-3 action tokens per turn, loss-mask zeros, values and
    token values, probes in [0, 1] and a greedy return."""
    K = draw(st.integers(1, max_K))
    B = draw(st.integers(1, max_B))
    episodes: list[Episode] = []
    uid = 0
    gi = 0
    while len(episodes) < B:
        size = min(draw(st.integers(1, 4)), B - len(episodes))
        probe0 = draw(_value(0.0, 1.0))
        members: list[list[Turn]] = []
        for _ in range(size):
            n = draw(st.integers(0, K))
            turns: list[Turn] = []
            if members and n and draw(st.booleans()):
                src = draw(st.sampled_from(members))
                keep = draw(st.integers(0, min(n, len(src))))
                turns = list(src[:keep])
            while len(turns) < n:
                uid += 1
                turns.append(draw(_turn(uid)))
            members.append(turns)
            role = draw(st.sampled_from(["agent", "agent", "opponent"]))
            truncated = draw(st.booleans())
            episodes.append(
                Episode(
                    turns=tuple(turns),
                    group_id=f"g{gi}",
                    role=role,
                    terminated=not truncated,
                    truncated=truncated,
                    probe0={"gold": probe0},
                    final_obs_ids=(3,),
                    meta={"greedy_return": draw(_value()), "v_boot": draw(_value())},
                )
            )
        gi += 1
    batch = CreditBatch.from_episodes(episodes, probe_key="gold")
    values = torch.zeros(batch.B, batch.K)
    tvalues = torch.zeros(batch.B, batch.T)
    for b, ep in enumerate(episodes):
        pos = 0
        for k, t in enumerate(ep.turns):
            values[b, k] = t.info["v"]
            pos += len(t.obs_ids)
            tvalues[b, pos : pos + len(t.action_ids)] = torch.tensor(t.info["tv"])
            pos += len(t.action_ids)
        if ep.truncated:
            values[b, ep.num_turns] = ep.meta["v_boot"]
    return cast(batch.with_values(values, tvalues), dtype)
