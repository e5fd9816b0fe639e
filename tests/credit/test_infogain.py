"""Information gain and potentials (CREDIT.md 8): igpo and siop."""

from __future__ import annotations

import torch
from hypothesis import given

from creditgym.credit import compute

from .fixtures import assert_rows, credit_batches, few, fixture_F_test, loop_tests, replace, rows_batch

# ---------------------------------------------------------------- worked examples (fixture F, CREDIT.md 1.7, 8)
F_EXPECTED = [
    ("igpo", {}, [[0.9972, 1.7949, 1.9943], [-0.5983, 0], [-0.3989, 0.3989, 0.9972], [0.8444, 1.1043], [-0.8444]]),
    ("igpo", {"norm": "separate"}, [[1.8165, 2.6330, 1], [-1, -1], [-0.8165, 0, 0], [0.7071, 0.7071], [-0.7071]]),
]  # fmt: skip


test_fixture_F = fixture_F_test(F_EXPECTED)


def test_siop_example_S() -> None:
    phi = [[-1, -0.6, -0.2], [-1, -0.9, -1.1], [-1.2, -0.4, -0.3]]
    S = rows_batch([[0, 0]] * 3, probe=phi, outcome=[0.5, 0.5, 0.25])
    adv = compute("siop", S)
    assert_rows(adv.turn_BK, S, [[1.0160, 0.9199], [-1.9496, -1.0572], [0.9336, -0.4805]])


# ---------------------------------------------------------------- loop reference vs vectorised (CREDIT.md 9.1)
test_loop_reference_matches_vectorized_float64, test_loop_reference_matches_vectorized_float32 = loop_tests(
    "igpo", "siop"
)


# ---------------------------------------------------------------- properties (CREDIT.md 9.3)
@few
@given(batch=credit_batches())
def test_siop_zero_mass_gives_zero(batch) -> None:
    z = replace(batch, outcome_B=torch.zeros_like(batch.outcome_B), probe_BK1=torch.zeros_like(batch.probe_BK1))
    assert bool((compute("siop", z).turn_BK == 0).all())
