"""CREDIT.md 9.1: every estimator against its slow per-episode loop reference on random batches."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from creditgym.credit import ESTIMATORS, compute
from creditgym.credit.reference import REFERENCES

from .cases import CASES
from .fixtures import cast, credit_batches

OPTIONAL = ("clip_scale_BK", "returns_BK", "returns_BT")


def assert_same(adv, ref, batch, atol: float) -> None:
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


def test_every_estimator_has_a_reference_and_a_case() -> None:
    builtins = {n for n, f in ESTIMATORS.items() if f.__module__.startswith("creditgym.credit.")}
    assert builtins <= set(REFERENCES)
    assert builtins <= {name for name, _ in CASES}


@pytest.mark.parametrize("name,cfg", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
@settings(max_examples=8)
@given(batch=credit_batches())
def test_loop_reference_matches_vectorized_float64(name, cfg, batch) -> None:
    assert_same(compute(name, batch, **cfg), REFERENCES[name](batch, **cfg), batch, atol=1e-10)


@pytest.mark.parametrize("name,cfg", CASES[::3], ids=[n for n, _ in CASES[::3]])
@settings(max_examples=5)
@given(batch=credit_batches(dtype=torch.float32))
def test_loop_reference_matches_vectorized_float32(name, cfg, batch) -> None:
    ref = REFERENCES[name](cast(batch, torch.float64), **cfg)
    adv = compute(name, batch, **cfg)
    assert adv.turn_BK.dtype == torch.float32
    torch.testing.assert_close(adv.turn_BK.double(), ref.turn_BK, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(adv.token_BT.double(), ref.token_BT, atol=1e-4, rtol=1e-4)
