"""`pvd` (pooled value differences over abstract states, docs/credit.md): worked example, loop
reference on the random batches and on batches with abstract ids, property reductions, packing of
`abstract_BK1`."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym.batch import CreditBatch
from creditgym.credit import REFERENCES, compute
from creditgym.trajectory import Episode, Turn

from .fixtures import assert_same, credit_batches, loop_tests

# ---------------------------------------------------------------- worked example P (docs/credit.md)
# ep group rewards    abstract z (then final)  end
P_ROWS = [
    (0, [0, 1], [0, 1, -1], False),
    (0, [0, 0], [0, 2, -1], False),
    (0, [0, 0, 1], [0, 1, 1, -1], False),
    (1, [0, 0], [0, 1, 1], True),
]


def example_P() -> CreditBatch:
    B, K, T = 4, 3, 9
    rewards = torch.zeros(B, K, dtype=torch.float64)
    mask = torch.zeros(B, K, dtype=torch.bool)
    z = torch.full((B, K + 1), -1, dtype=torch.int64)
    tt = torch.full((B, T), -1, dtype=torch.int64)
    group = torch.zeros(B, dtype=torch.int64)
    trunc = torch.zeros(B, dtype=torch.bool)
    for b, (g, r, zz, tr) in enumerate(P_ROWS):
        n = len(r)
        group[b], trunc[b] = g, tr
        rewards[b, :n] = torch.tensor(r, dtype=torch.float64)
        mask[b, :n] = True
        z[b, : n + 1] = torch.tensor(zz)
        for k in range(n):
            tt[b, 3 * k + 1 : 3 * k + 3] = k
    batch = CreditBatch(
        rewards_BK=rewards, turn_mask_BK=mask, outcome_B=rewards.sum(1), group_B=group,
        state_BK=torch.where(mask, torch.arange(B * K).view(B, K), -1), node_BK=torch.where(mask, 0, -1),
        terminated_B=~trunc, truncated_B=trunc, token_turn_BT=tt, loss_mask_BT=tt >= 0, abstract_BK1=z,
    )  # fmt: skip
    batch.validate()
    return batch


def rows(x: torch.Tensor, batch: CreditBatch) -> list[list[float]]:
    n = batch.turn_mask_BK.sum(1).tolist()
    return [[round(v, 4) for v in x[b, : n[b]].tolist()] for b in range(batch.B)]


def test_worked_example_P() -> None:
    batch = example_P()
    adv = compute("pvd", batch, prior=1.0)
    assert rows(adv.turn_BK, batch) == [[0.3125, 0.0625], [-0.625, 0.0], [0.3125, 0.0, 0.0625], [0.125, -0.375]]
    assert adv.metrics["pvd/frac_turns_pooled"] == pytest.approx(6 / 9)
    boot = compute("pvd", batch, prior=1.0, bootstrap_truncated=True)
    assert rows(boot.turn_BK, batch)[3] == [0.125, 0.0]
    # prior 0: each group's own means; group 1 has one episode, so every value is its own return
    own = compute("pvd", batch, prior=0.0)
    assert rows(own.turn_BK, batch)[0] == [0.3333, 0.0]
    assert rows(own.turn_BK, batch)[1] == [-0.6667, 0.0]
    assert rows(own.turn_BK, batch)[3] == [0.0, 0.0]


def test_token_broadcast_and_padding() -> None:
    batch = example_P()
    adv = compute("pvd", batch, prior=1.0)
    assert adv.token_BT[0, 1].item() == pytest.approx(0.3125) and adv.token_BT[0, 0].item() == 0.0
    assert bool((adv.turn_BK[~batch.turn_mask_BK] == 0).all())


# ---------------------------------------------------------------- random batches with abstract ids
@st.composite
def abstract_batches(draw: st.DrawFn, dtype: torch.dtype = torch.float64) -> CreditBatch:
    """`credit_batches` plus random abstract ids from 3 symbols (collisions within and across groups),
    the final column sometimes unknown (-1)."""
    batch = draw(credit_batches(dtype=dtype))
    n = batch.turn_mask_BK.sum(1).tolist()
    z = torch.full((batch.B, batch.K + 1), -1, dtype=torch.int64)
    for b in range(batch.B):
        for j in range(n[b] + 1):
            z[b, j] = draw(st.integers(-1 if j == n[b] else 0, 2))
    return dataclasses.replace(batch, abstract_BK1=z)


test_loop_reference_matches_vectorized_float64, test_loop_reference_matches_vectorized_float32 = loop_tests("pvd")

CFGS = [
    {},
    {"gamma": 0.9, "prior": 0.0, "bootstrap_truncated": True},
    {"prior": 2.5, "outcome_weight": 0.5, "singleton": "zero", "bootstrap_truncated": True},
]


@pytest.mark.parametrize("cfg", CFGS)
@settings(max_examples=15, deadline=None)
@given(batch=abstract_batches())
def test_loop_reference_matches_vectorized_with_abstract_ids(cfg, batch) -> None:
    assert_same(compute("pvd", batch, **cfg), REFERENCES["pvd"](batch, **cfg), batch, atol=1e-10)


@settings(max_examples=15, deadline=None)
@given(batch=abstract_batches())
def test_all_equal_returns_give_zero(batch) -> None:
    """Terminal-only rewards equal everywhere: every value is that return, every TD error 0."""
    mask = batch.turn_mask_BK
    last = torch.arange(batch.K)[None, :] == (mask.sum(1, keepdim=True) - 1)
    rewards = torch.where(mask & last, 0.7, 0.0).to(batch.rewards_BK.dtype)
    b = dataclasses.replace(batch, rewards_BK=rewards, terminated_B=torch.ones_like(batch.terminated_B),
                            truncated_B=torch.zeros_like(batch.truncated_B))  # fmt: skip
    adv = compute("pvd", b)
    torch.testing.assert_close(adv.turn_BK, torch.zeros_like(adv.turn_BK), atol=1e-12, rtol=0)


@settings(max_examples=15, deadline=None)
@given(batch=abstract_batches(), c=st.sampled_from([-1.0, 0.5, 3.0]))
def test_shifting_terminal_rewards_changes_nothing(batch, c) -> None:
    """Terminal-only rewards of terminated episodes shifted by c: V(z) shifts by c wherever the
    remaining return does, so the TD errors are unchanged."""
    mask = batch.turn_mask_BK
    last = torch.arange(batch.K)[None, :] == (mask.sum(1, keepdim=True) - 1)
    base = torch.where(mask & last, batch.rewards_BK, 0.0)
    term = dict(terminated_B=torch.ones_like(batch.terminated_B), truncated_B=torch.zeros_like(batch.truncated_B))
    b0 = dataclasses.replace(batch, rewards_BK=base, **term)
    b1 = dataclasses.replace(batch, rewards_BK=torch.where(mask & last, base + c, 0.0), **term)
    torch.testing.assert_close(compute("pvd", b1).turn_BK, compute("pvd", b0).turn_BK, atol=1e-10, rtol=0)


@settings(max_examples=15, deadline=None)
@given(batch=abstract_batches())
def test_unique_states_and_prior_zero_reduce_to_zero(batch) -> None:
    """Every turn its own abstract state and prior 0: V(z_k) is the turn's own return-to-go, so
    A = r + gamma * G_{k+1} - G_k = 0 (no pooling, no signal), as gigpo's singleton anchors."""
    B, K = batch.turn_mask_BK.shape
    z = torch.arange(B * (K + 1)).view(B, K + 1)
    adv = compute("pvd", dataclasses.replace(batch, abstract_BK1=z), prior=0.0, gamma=0.9)
    torch.testing.assert_close(adv.turn_BK, torch.zeros_like(adv.turn_BK), atol=1e-12, rtol=0)


@settings(max_examples=10, deadline=None)
@given(batch=abstract_batches())
def test_permuting_episodes_permutes_outputs(batch) -> None:
    perm = torch.randperm(batch.B, generator=torch.Generator().manual_seed(0))
    fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    moved = {k: v[perm] for k, v in fields.items() if isinstance(v, torch.Tensor) and v.shape[:1] == (batch.B,)}
    b2 = dataclasses.replace(batch, **moved)
    for cfg in CFGS:
        torch.testing.assert_close(compute("pvd", b2, **cfg).turn_BK, compute("pvd", batch, **cfg).turn_BK[perm])


def test_without_abstract_ids_uses_state_ids() -> None:
    batch = example_P()
    plain = dataclasses.replace(batch, abstract_BK1=None, state_BK=torch.where(batch.turn_mask_BK, batch.abstract_BK1[:, :-1], -1))
    torch.testing.assert_close(compute("pvd", plain).turn_BK, compute("pvd", batch).turn_BK)
    # key="state" ignores abstract ids
    torch.testing.assert_close(compute("pvd", batch, key="state").turn_BK, compute("pvd", dataclasses.replace(batch, abstract_BK1=None)).turn_BK)


def test_bad_knobs_raise() -> None:
    with pytest.raises(ValueError, match="key must be one of"):
        compute("pvd", example_P(), key="text")
    with pytest.raises(ValueError, match="prior must be >= 0"):
        compute("pvd", example_P(), prior=-1.0)


# ---------------------------------------------------------------- packing
def _ep(keys: list[str], final: str | None, group: str = "g") -> Episode:
    turns = tuple(Turn(obs_ids=(1,), action_ids=(2,), reward=0.0, state_key=f"s{i}", info={"abstract_state": k})
                  for i, k in enumerate(keys))  # fmt: skip
    meta = {} if final is None else {"final_abstract_state": final}
    return Episode(turns=turns, group_id=group, terminated=True, truncated=False, meta=meta)


def test_from_episodes_packs_abstract_ids() -> None:
    batch = CreditBatch.from_episodes([_ep(["a", "b"], "c"), _ep(["a"], None), _ep([], "a")])
    assert batch.abstract_BK1 is not None
    assert batch.abstract_BK1.tolist() == [[0, 1, 2], [0, -1, -1], [0, -1, -1]]
    moved = batch.to("cpu")
    assert moved.abstract_BK1 is not None and torch.equal(moved.abstract_BK1, batch.abstract_BK1)
    assert torch.equal(batch.with_values(torch.zeros(3, 2)).abstract_BK1, batch.abstract_BK1)


def test_from_episodes_without_abstract_states_packs_none() -> None:
    ep = Episode(turns=(Turn(obs_ids=(1,), action_ids=(2,), state_key="s"),), terminated=True)
    assert CreditBatch.from_episodes([ep]).abstract_BK1 is None


def test_validate_rejects_bad_abstract_ids() -> None:
    batch = example_P()
    with pytest.raises(ValueError, match="abstract_BK1 has shape"):
        dataclasses.replace(batch, abstract_BK1=batch.abstract_BK1[:, :-1]).validate()
    bad = batch.abstract_BK1.clone()
    bad[0, 0] = -1
    with pytest.raises(ValueError, match="every valid turn"):
        dataclasses.replace(batch, abstract_BK1=bad).validate()


@settings(max_examples=15, deadline=None)
@given(batch=abstract_batches())
def test_prior_zero_without_bootstrap_keeps_groups_independent(batch) -> None:
    """prior = 0 uses each group's own means: changing another group's rewards changes nothing here
    (with prior > 0 the batch-wide means couple the groups by design)."""
    other = batch.group_B != batch.group_B[0]
    rewards = torch.where(other[:, None], batch.rewards_BK * 2 + 0.3, batch.rewards_BK)
    changed = dataclasses.replace(batch, rewards_BK=torch.where(batch.turn_mask_BK, rewards, 0.0))
    a, b = compute("pvd", batch, prior=0.0), compute("pvd", changed, prior=0.0)
    torch.testing.assert_close(a.turn_BK[~other], b.turn_BK[~other], atol=1e-12, rtol=0)
