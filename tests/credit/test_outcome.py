"""Outcome baselines (CREDIT.md 2): grpo, dr_grpo, rloo, reinforce++, reinforce++_baseline, remax."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given

from creditgym.credit import compute

from .fixtures import (
    assert_rows,
    close,
    credit_batches,
    few,
    fixture_F,
    fixture_F_test,
    group_sizes,
    loop_tests,
    replace,
)

# ---------------------------------------------------------------- worked examples (fixture F, CREDIT.md 1.7)
F_EXPECTED = [
    ("grpo", {}, [[1, 1, 1], [-1, -1], [0, 0, 0], [0.7071, 0.7071], [-0.7071]]),
    ("dr_grpo", {}, [[0.5, 0.5, 0.5], [-0.5, -0.5], [0, 0, 0], [0.5, 0.5], [-0.5]]),
    ("rloo", {}, [[0.75, 0.75, 0.75], [-0.75, -0.75], [0, 0, 0], [1, 1], [-1]]),
    ("reinforce++", {}, [[1.2925, 1.2925, 0.2770], [-0.7385, -1.7541], [0.2770] * 3, [0.2770] * 2, [-1.7541]]),
    ("reinforce++", {"stats": "turn"},
     [[1.2613, 1.2613, 0.2703], [-0.7207, -1.7118], [0.2703] * 3, [0.2703] * 2, [-1.7118]]),
    ("reinforce++_baseline", {}, [[0.9594] * 3, [-1.3858] * 2, [-0.2132] * 3, [0.9594] * 2, [-1.3858]]),
    ("reinforce++_baseline", {"stats": "turn"},
     [[0.9363] * 3, [-1.3524] * 2, [-0.2081] * 3, [0.9363] * 2, [-1.3524]]),
]  # fmt: skip


test_fixture_F = fixture_F_test(F_EXPECTED)


def test_remax_example() -> None:
    F = dataclasses.replace(fixture_F(), greedy_return_B=torch.ones(5))
    assert_rows(compute("remax", F).turn_BK, F, [[0.5] * 3, [-0.5] * 2, [0] * 3, [0] * 2, [-1]])


# ---------------------------------------------------------------- loop reference vs vectorised (CREDIT.md 9.1)
test_loop_reference_matches_vectorized_float64, test_loop_reference_matches_vectorized_float32 = loop_tests(
    "grpo", "dr_grpo", "rloo", "reinforce++", "reinforce++_baseline", "remax"
)


# ---------------------------------------------------------------- properties (CREDIT.md 9.3)
@few
@given(batch=credit_batches())
def test_grpo_shift_scale_invariant_and_sums_to_zero(batch) -> None:
    a = compute("grpo", batch, singleton="zero")
    b = compute("grpo", replace(batch, outcome_B=3 * batch.outcome_B + 2), singleton="zero")
    torch.testing.assert_close(a.turn_BK, b.turn_BK, atol=1e-4, rtol=1e-4)
    adv_B = a.turn_BK[:, 0]
    sums = torch.zeros(int(batch.group_B.max()) + 1, dtype=adv_B.dtype).index_add_(0, batch.group_B, adv_B)
    assert sums.abs().max() < 1e-9


@few
@given(batch=credit_batches())
def test_dr_grpo_rloo_remax_relations(batch) -> None:
    dr = compute("dr_grpo", batch).turn_BK
    torch.testing.assert_close(dr, compute("grpo", batch, norm_std=False).turn_BK, **close)
    n = group_sizes(batch).to(dr.dtype)[:, None]
    big = (n >= 2) & batch.turn_mask_BK
    rl = compute("rloo", batch).turn_BK
    torch.testing.assert_close(rl[big], (n / (n - 1).clamp(min=1) * dr)[big], **close)
    has = batch.turn_mask_BK.any(1)
    sums = torch.zeros(batch.B, dtype=dr.dtype).index_add_(0, batch.group_B, batch.outcome_B * has)
    counts = torch.zeros(batch.B, dtype=dr.dtype).index_add_(0, batch.group_B, has.to(dr.dtype))
    greedy = (sums / counts.clamp(min=1))[batch.group_B]
    rm = compute("remax", replace(batch, greedy_return_B=greedy)).turn_BK
    torch.testing.assert_close(rm[big], dr[big], **close)


@few
@given(batch=credit_batches())
def test_reinforce_pp_token_whitened_and_last_turn_reward(batch) -> None:
    adv = compute("reinforce++", batch)
    x = adv.token_BT[batch.loss_mask_BT]
    if x.numel() >= 2 and (x.max() - x.min()) > 1e-6:
        assert float(x.mean()) == pytest.approx(0, abs=1e-9)
        assert float(x.std()) == pytest.approx(1, abs=1e-3)
    n_B = batch.turn_mask_BK.sum(1)
    last = torch.arange(batch.K)[None, :] == (n_B[:, None] - 1)
    R = batch.rewards_BK.sum(1, keepdim=True)
    only_last = replace(batch, rewards_BK=torch.where(last, R, 0.0))
    b = compute("reinforce++", only_last)
    c = compute("reinforce++_baseline", replace(only_last, group_B=torch.arange(batch.B)), singleton="raw")
    torch.testing.assert_close(b.token_BT, c.token_BT, atol=1e-6, rtol=1e-6)  # X = R[b] on every token
