"""pytest-benchmark timings of a few estimators at a small size (the full table: `creditgym bench credit`)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from creditgym.benchmarks.credit import head, run, synthetic_batch
from creditgym.credit import compute
from creditgym.credit.registry import REFERENCES


@pytest.fixture(scope="module")
def small_batch():
    batch = synthetic_batch(B=64, K=4, T=64, seed=1)
    batch.validate()
    return batch


@pytest.mark.parametrize("name,cfg", [("grpo", {}), ("gigpo", {}), ("gae", {"level": "token"}), ("tree", {})])
def test_bench_estimator(benchmark, small_batch, name, cfg) -> None:
    adv = benchmark.pedantic(compute, args=(name, small_batch), kwargs=cfg, rounds=3, iterations=1)
    ref = REFERENCES[name](small_batch, **cfg)
    torch.testing.assert_close(adv.turn_BK, ref.turn_BK, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(adv.token_BT, ref.token_BT, atol=1e-4, rtol=1e-4)


def test_synthetic_batch_is_valid_and_runs_every_case() -> None:
    batch = synthetic_batch(B=16, K=3, T=24, seed=0)
    batch.validate()
    assert head(batch, 5).B == 5
    rows = run(B=16, K=3, T=24, loop_episodes=8, gpu=False)
    assert len(rows) == 22 and all(r.vectorized_s > 0 and r.loop_s_scaled > 0 for r in rows)


@pytest.mark.parametrize("name,cfg", [("grpo", {}), ("reinforce++", {"gamma": 0.9}), ("gae", {}), ("spo", {"prob_mask": True})])
def test_int32_token_turn_gives_identical_results(small_batch, name, cfg) -> None:
    """CREDIT.md 10 allows int32 `token_turn_BT` to save memory; results must not change."""
    b32 = dataclasses.replace(small_batch, token_turn_BT=small_batch.token_turn_BT.to(torch.int32))
    a, b = compute(name, small_batch, **cfg), compute(name, b32, **cfg)
    assert torch.equal(a.turn_BK, b.turn_BK) and torch.equal(a.token_BT, b.token_BT)
    assert a.metrics == b.metrics
