"""Shared test helpers of the credit families: `CASES` (the estimator configurations the random-batch
tests run: each family file its own rows through `loop_tests`, test_invariants.py the whole table or
every n-th row), fixture F of CREDIT.md 1.7 and its test (`fixture_F_test`), small hand batches, the hypothesis strategy
`credit_batches`, `assert_same`, and `loop_tests`, the loop-vs-vectorised tests (CREDIT.md 9.1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym.batch import CreditBatch
from creditgym.credit import REFERENCES, Advantages, broadcast_to_tokens, compute
from creditgym.trajectory import Episode, Turn

ATOL = 1e-4
OPTIONAL = ("clip_scale_BK", "returns_BK", "returns_BT")
few = settings(max_examples=6)
brief = settings(max_examples=4)
close = dict(atol=1e-8, rtol=1e-8)

CASES: list[tuple[str, dict[str, Any]]] = [
    ("grpo", {}),
    ("grpo", {"norm_std": False, "singleton": "zero"}),
    ("dr_grpo", {}),
    ("rloo", {}),
    ("rloo", {"singleton": "zero"}),
    ("reinforce++", {}),
    ("reinforce++", {"gamma": 0.9, "stats": "turn"}),
    ("reinforce++", {"gamma": 0.8, "recenter": False}),
    ("reinforce++_baseline", {}),
    ("reinforce++_baseline", {"stats": "turn", "singleton": "zero"}),
    ("remax", {}),
    ("gae", {}),
    ("gae", {"gamma": 0.9, "lam": 0.7, "whiten": False}),
    ("gae", {"level": "turn", "lam": 0.5}),
    ("gae", {"level": "turn", "gamma": 0.9, "whiten": False, "bootstrap_truncated": False}),
    ("gae", {"level": "hierarchical", "lam_token": 0.5, "whiten": False}),
    ("gae", {"level": "hierarchical", "gamma": 0.9, "gamma_token": 0.8}),
    ("turn_return", {}),
    ("turn_return", {"gamma": 0.5, "norm": "pooled", "use_std": False}),
    ("mt_grpo", {}),
    ("mt_grpo", {"mode": "cae", "gamma": 0.9, "outcome": "outcome_B", "singleton": "zero"}),
    ("a2tgpo", {}),
    ("a2tgpo", {"gamma": 0.9, "beta": 0.5}),
    ("pure", {}),
    ("pure", {"form": "exact", "vr_coef": 0.5}),
    ("pure", {"temperature": 0.5, "vr_coef": 1.0, "singleton": "zero"}),
    ("rebn", {}),
    ("rebn", {"gamma": 1.0, "std": "population"}),
    ("gigpo", {}),
    ("gigpo", {"norm": "std", "episode_stats": "episodes", "omega": 0.5}),
    ("gigpo", {"gamma": 1.0, "singleton": "zero"}),
    ("tree", {}),
    ("tree", {"form": "treerl"}),
    ("tree", {"beta": 0.5, "leaf": "raw", "singleton": "zero"}),
    ("tree_grpo", {}),
    ("tree_grpo", {"intra_weight": 0.5, "singleton": "zero"}),
    ("vineppo", {}),
    ("vineppo", {"gamma": 0.9, "bootstrap_truncated": True}),
    ("spo", {}),
    ("spo", {"variant": "tree", "prob_mask": True}),
    ("spo", {"prob_mask": True, "rho": 0.5, "bootstrap_truncated": True}),
    ("pvd", {}),
    ("pvd", {"gamma": 0.9, "prior": 0.0, "outcome_weight": 0.5, "bootstrap_truncated": True, "singleton": "zero"}),
    ("pvd", {"key": "state", "prior": 1.5}),
    ("igpo", {}),
    ("igpo", {"norm": "separate", "gamma": 0.9, "use_std": False}),
    ("siop", {}),
    ("siop", {"lam": 0.2, "gamma": 0.9, "gamma_phi": 0.95}),
    ("digirl", {}),
    ("digirl", {"lam": 0.8, "variant": "release"}),
]

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


def rows_batch(rewards: list[list[float]], probe: list[list[float]] | None = None,
               outcome: list[float] | None = None) -> CreditBatch:  # fmt: skip
    """One group, one observation token and one action token per turn."""
    B, K = len(rewards), max(len(r) for r in rewards)
    r = torch.zeros(B, K)
    mask = torch.zeros(B, K, dtype=torch.bool)
    ids = torch.full((B, K), -1)
    tt = torch.full((B, 2 * K), -1)
    p = torch.zeros(B, K + 1)
    for b, row in enumerate(rewards):
        n = len(row)
        r[b, :n], mask[b, :n] = torch.tensor(row), True
        ids[b, :n] = torch.arange(n) + 10 * b
        tt[b, 1 : 2 * n : 2] = torch.arange(n)
        if probe is not None:
            p[b, : n + 1] = torch.tensor(probe[b])
    return CreditBatch(
        rewards_BK=r,
        turn_mask_BK=mask,
        outcome_B=torch.tensor(outcome) if outcome is not None else r.sum(1),
        group_B=torch.zeros(B, dtype=torch.int64),
        state_BK=ids,
        node_BK=ids.clone(),
        terminated_B=torch.ones(B, dtype=torch.bool),
        truncated_B=torch.zeros(B, dtype=torch.bool),
        token_turn_BT=tt,
        loss_mask_BT=tt >= 0,
        probe_BK1=p if probe is not None else None,
    )


# ---------------------------------------------------------------- checks
def rows(adv_BK: torch.Tensor, batch: CreditBatch) -> list[list[float]]:
    n_B = batch.turn_mask_BK.sum(1).tolist()
    return [row[:n] for row, n in zip(adv_BK.tolist(), n_B)]


def assert_rows(adv_BK: torch.Tensor, batch: CreditBatch, expected: list[list[float]]) -> None:
    got = rows(adv_BK, batch)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, abs=ATOL), (got, expected)


def fixture_F_test(expected_rows: list[tuple[str, dict, list[list[float]]]]) -> Callable[..., None]:
    """The worked-example test on fixture F (CREDIT.md 1.7): each `(name, cfg, rows)` gives the
    hand-computed per-turn rows; the tokens get the plain turn -> token broadcast."""

    @pytest.mark.parametrize("name,cfg,expected", expected_rows, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(expected_rows)])
    def test_fixture_F(name, cfg, expected) -> None:
        F = fixture_F()
        adv = compute(name, F, **cfg)
        assert_rows(adv.turn_BK, F, expected)
        if name not in ("reinforce++",):  # reinforce++ writes token_BT itself; equal here since gamma = 1
            torch.testing.assert_close(adv.token_BT, broadcast_to_tokens(adv.turn_BK, F.token_turn_BT, F.loss_mask_BT))

    return test_fixture_F


def assert_same(adv: Advantages, ref: Advantages, batch: CreditBatch, atol: float) -> None:
    torch.testing.assert_close(adv.turn_BK, ref.turn_BK, atol=atol, rtol=atol)
    torch.testing.assert_close(adv.token_BT, ref.token_BT, atol=atol, rtol=atol)
    for name in OPTIONAL:
        a, r = getattr(adv, name), getattr(ref, name)
        assert (a is None) == (r is None), name
        if a is not None:
            torch.testing.assert_close(a, r, atol=atol, rtol=atol)
    assert bool((adv.turn_BK[~batch.turn_mask_BK] == 0).all())
    assert bool((adv.token_BT[~batch.loss_mask_BT] == 0).all())
    assert not bool(torch.isnan(adv.turn_BK).any() or torch.isnan(adv.token_BT).any())
    assert sorted(adv.metrics) == sorted(ref.metrics)
    for key, value in adv.metrics.items():
        assert value == pytest.approx(ref.metrics[key], abs=max(atol, 1e-6)), key


def case_ids(cases: list) -> list[str]:
    return [f"{n}-{i}" for i, (n, _) in enumerate(cases)]


def loop_tests(*names: str) -> tuple[Callable[..., None], Callable[..., None]]:
    """The loop-vs-vectorised tests of CREDIT.md 9.1 for the estimators `names` on random batches:
    float64 on every case of `CASES`, float32 on every third case of the table."""
    cases = [c for c in CASES if c[0] in names]
    cases32 = [c for c in CASES[::3] if c[0] in names]

    @pytest.mark.parametrize("name,cfg", cases, ids=case_ids(cases))
    @settings(max_examples=8)
    @given(batch=credit_batches())
    def test_loop_reference_matches_vectorized_float64(name, cfg, batch) -> None:
        assert_same(compute(name, batch, **cfg), REFERENCES[name](batch, **cfg), batch, atol=1e-10)

    @pytest.mark.parametrize("name,cfg", cases32, ids=case_ids(cases32))
    @settings(max_examples=5)
    @given(batch=credit_batches(dtype=torch.float32))
    def test_loop_reference_matches_vectorized_float32(name, cfg, batch) -> None:
        ref = REFERENCES[name](cast(batch, torch.float64), **cfg)
        adv = compute(name, batch, **cfg)
        assert adv.turn_BK.dtype == torch.float32
        torch.testing.assert_close(adv.turn_BK.double(), ref.turn_BK, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(adv.token_BT.double(), ref.token_BT, atol=1e-4, rtol=1e-4)

    return test_loop_reference_matches_vectorized_float64, test_loop_reference_matches_vectorized_float32


# ---------------------------------------------------------------- property helpers (CREDIT.md 9.3)
def group_sizes(batch: CreditBatch) -> torch.Tensor:
    """Per episode: the number of episodes with turns in its group."""
    has = batch.turn_mask_BK.any(1)
    same = batch.group_B[:, None] == batch.group_B[None, :]
    return (same & has[None, :]).sum(1)


def replace(batch: CreditBatch, **kw) -> CreditBatch:
    return dataclasses.replace(batch, **kw)


def distinct_ids(batch: CreditBatch) -> torch.Tensor:
    ids = torch.arange(batch.B * batch.K).view(batch.B, batch.K)
    return torch.where(batch.turn_mask_BK, ids, -1)
