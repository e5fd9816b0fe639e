"""Turn-level estimators (CREDIT.md 4): turn_return, mt_grpo, a2tgpo, pure, rebn."""

from __future__ import annotations

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
    rows_batch,
)

# ---------------------------------------------------------------- worked examples (fixture F, CREDIT.md 1.7, 4)
F_EXPECTED = [
    ("turn_return", {"gamma": 0.5},
     [[0.5774, 1, 0], [0.5774, -1], [-1.1547, 0, 0], [0.7071, 0], [-0.7071]]),
    ("turn_return", {"gamma": 0.5, "norm": "pooled"},
     [[-0.2490, 1.0791, 1.0791], [-0.2490, -1.5771], [-0.9131, -0.2490, 1.0791], [0, 1], [-1]]),
    ("mt_grpo", {}, [[0, 1.2845, 0.5774], [0, -1.1547], [0, -0.1298, 0.5774], [0.7071, 0.7071], [-0.7071]]),
    ("mt_grpo", {"mode": "cae"},
     [[1, 0.7071, 0.5774], [-1, -1.1547], [0, -0.7071, 0.5774], [0, 0.7071], [-0.7071]]),
    ("a2tgpo", {}, [[0.6523, 1.2071, 1], [0.1094, -1], [-0.7416, -0.5, 0], [0.5, 0.7071], [-0.7071]]),
    ("rebn", {},
     [[1.0142, 1.3211, 0.4443], [-0.6516, -1.7475], [0.0279, 0.2252, 0.4443], [0.2252, 0.4443], [-1.7475]]),
]  # fmt: skip


test_fixture_F = fixture_F_test(F_EXPECTED)


def test_fixture_F_a2tgpo_clip_scale() -> None:
    F = fixture_F()
    adv = compute("a2tgpo", F)
    expected = [[0.9157, 1.1019, 1.1386], [1.1562, 0.8614], [0.9157, 0.8981, 1], [1, 1.1019], [0.8981]]
    assert_rows(adv.clip_scale_BK, F, expected)
    assert bool((adv.clip_scale_BK[~F.turn_mask_BK] == 1).all())


def test_pure_example_P() -> None:
    P = rows_batch([[0.8, -0.6, 0.9], [0.7, 0.9, 0.5], [0.2, 0.4]])
    soft = compute("pure", P, temperature=0.1)
    assert_rows(soft.turn_BK, P, [[-1.0328, -0.8885, -0.1443], [0.6619, 0.5358, 0.4775], [0.2472, 0.0594]])
    exact = compute("pure", P, form="exact")
    assert_rows(exact.turn_BK, P, [[-0.95, -0.95, 0.55], [0.7] * 3, [0.25, 0.45]])


# ---------------------------------------------------------------- loop reference vs vectorised (CREDIT.md 9.1)
test_loop_reference_matches_vectorized_float64, test_loop_reference_matches_vectorized_float32 = loop_tests(
    "turn_return", "mt_grpo", "a2tgpo", "pure", "rebn"
)


# ---------------------------------------------------------------- properties (CREDIT.md 9.3)
@few
@given(batch=credit_batches(max_K=1))
def test_single_turn_reductions(batch) -> None:
    r0 = batch.rewards_BK[:, 0]
    g = compute("grpo", replace(batch, outcome_B=r0)).turn_BK
    big = (group_sizes(batch) >= 2)[:, None] & batch.turn_mask_BK
    torch.testing.assert_close(compute("turn_return", batch).turn_BK[big], g[big], **close)
    torch.testing.assert_close(compute("mt_grpo", batch).turn_BK, g, **close)
    grpo = compute("grpo", batch).turn_BK
    torch.testing.assert_close(compute("a2tgpo", batch).turn_BK, grpo, **close)
    for norm in ("joint", "separate"):
        torch.testing.assert_close(compute("igpo", batch, norm=norm).turn_BK[big], grpo[big], **close)


@few
@given(batch=credit_batches())
def test_mt_grpo_lam_zero_and_a2tgpo_scales(batch) -> None:
    n_B = batch.turn_mask_BK.sum(1)
    RO = batch.rewards_BK.gather(1, (n_B - 1).clamp(min=0)[:, None])[:, 0]
    g = compute("grpo", replace(batch, outcome_B=RO)).turn_BK
    torch.testing.assert_close(compute("mt_grpo", batch, lam=0.0).turn_BK, g, **close)
    assert bool((compute("a2tgpo", batch, beta=0.0).clip_scale_BK == 1).all())
    s = compute("a2tgpo", batch, beta=0.3).clip_scale_BK
    assert bool(((s > 0.7) & (s < 1.3)).all())


@few
@given(batch=credit_batches())
def test_pure_reductions(batch) -> None:
    zero = replace(batch, rewards_BK=torch.zeros_like(batch.rewards_BK))
    torch.testing.assert_close(compute("pure", zero, vr_coef=1.0).turn_BK, compute("rloo", zero).turn_BK, **close)


@few
@given(batch=credit_batches(max_K=1))
def test_pure_one_turn_softmin_equals_exact(batch) -> None:
    """A one-turn episode has r* = r, so both forms give r minus the others' mean."""
    soft = compute("pure", batch, temperature=0.3).turn_BK
    torch.testing.assert_close(soft, compute("pure", batch, form="exact").turn_BK, **close)


@few
@given(batch=credit_batches())
def test_rebn_mean_zero_and_shift(batch) -> None:
    a = compute("rebn", batch, gamma=1.0)
    m = batch.turn_mask_BK
    if int(m.sum()) >= 2:
        assert float(a.turn_BK[m].mean()) == pytest.approx(0, abs=1e-9)
    n_B = m.sum(1)
    last = torch.arange(batch.K)[None, :] == (n_B[:, None] - 1)
    shifted = compute("rebn", replace(batch, rewards_BK=batch.rewards_BK + 0.7 * last), gamma=1.0)
    torch.testing.assert_close(a.turn_BK, shifted.turn_BK, atol=1e-8, rtol=1e-6)
