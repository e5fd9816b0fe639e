"""Monte-Carlo segment values (CREDIT.md 7): vineppo and spo."""

from __future__ import annotations

import torch
from hypothesis import given

from creditgym.credit import compute

from .fixtures import close, credit_batches, few, fixture_F_test, loop_tests

# ---------------------------------------------------------------- worked examples (fixture F, CREDIT.md 1.7, 7)
F_EXPECTED = [
    ("vineppo", {}, [[0.25, 0.25, 0], [0, -0.5], [0.25, -0.5, 0.25], [0.5, 0], [-0.5]]),
    ("vineppo", {"bootstrap_truncated": True}, [[0.25, 0.25, 0], [0, -0.25], [0.25, -0.5, 0.25], [0.5, 0], [-0.5]]),
    ("spo", {}, [[0.25, 0.25, 0], [0, -0.5], [0.25, -0.5, 0.25], [0.5, 0], [-0.5]]),
    ("spo", {"variant": "tree"}, [[0.25, 0.25, 0], [-0.5, 0], [0.25, -0.25, 0], [0.5, 0], [-0.5]]),
]  # fmt: skip


test_fixture_F = fixture_F_test(F_EXPECTED)


# ---------------------------------------------------------------- loop reference vs vectorised (CREDIT.md 9.1)
test_loop_reference_matches_vectorized_float64, test_loop_reference_matches_vectorized_float32 = loop_tests(
    "vineppo", "spo"
)


# ---------------------------------------------------------------- properties (CREDIT.md 9.3)
@few
@given(batch=credit_batches())
def test_segment_reductions(batch) -> None:
    v = compute("vineppo", batch)
    torch.testing.assert_close(compute("spo", batch).turn_BK, v.turn_BK, **close)
    term = batch.terminated_B & batch.turn_mask_BK.any(1)
    total = v.turn_BK.sum(1)
    expect = batch.rewards_BK.sum(1) - batch.values_BK[:, 0]
    torch.testing.assert_close(total[term], expect[term], **close)
