"""GiGPO (CREDIT.md 5): worked example on fixture F, loop reference vs vectorised, properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from creditgym.credit import compute

from .fixtures import (
    ATOL,
    close,
    credit_batches,
    distinct_ids,
    few,
    fixture_F,
    fixture_F_test,
    loop_tests,
    replace,
)

# ---------------------------------------------------------------- worked example (fixture F, CREDIT.md 1.7, 5)
F_EXPECTED = [
    ("gigpo", {"gamma": 0.5},
     [[0.5208, 0.9375, 0.4375], [-0.4792, -1.0625], [-0.2292, -0.0625, -0.0625], [0.5833, 0.3333], [-0.9167]]),
    ("gigpo", {"gamma": 0.5, "episode_stats": "episodes"},
     [[0.5833, 1, 0.5], [-0.4167, -1], [-0.1667, 0, 0], [0.75, 0.5], [-0.75]]),
    ("gigpo", {"gamma": 0.5, "norm": "std"},
     [[1.6258, 2.0485, 1.0485], [-0.7707, -2.3481], [-1.3045, -0.1498, -0.1498], [1.2845, 0.5773], [-1.8618]]),
]  # fmt: skip


test_fixture_F = fixture_F_test(F_EXPECTED)


def test_fixture_F_gigpo_metrics() -> None:
    m = compute("gigpo", fixture_F(), gamma=0.5).metrics
    assert m["gigpo/anchor_size_frac/1"] == pytest.approx(0.2)
    assert m["gigpo/anchor_size_frac/2"] == pytest.approx(0.4)
    assert m["gigpo/anchor_size_frac/3"] == pytest.approx(0.4)
    assert m["gigpo/anchor_size_frac/9+"] == 0
    assert m["gigpo/frac_steps_singleton"] == pytest.approx(1 / 11, abs=ATOL)


# ---------------------------------------------------------------- loop reference vs vectorised (CREDIT.md 9.1)
test_loop_reference_matches_vectorized_float64, test_loop_reference_matches_vectorized_float32 = loop_tests("gigpo")


# ---------------------------------------------------------------- properties (CREDIT.md 9.3)
@few
@given(batch=credit_batches())
def test_gigpo_reductions(batch) -> None:
    distinct = replace(batch, state_BK=distinct_ids(batch))
    for norm, base in (("std", "grpo"), ("mean", "dr_grpo")):
        g = compute("gigpo", distinct, norm=norm, episode_stats="episodes").turn_BK
        torch.testing.assert_close(g, compute(base, batch).turn_BK, **close)
    e = compute("gigpo", batch, omega=0.0).turn_BK
    torch.testing.assert_close(e, compute("gigpo", distinct).turn_BK, **close)
