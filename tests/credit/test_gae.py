"""GAE at token, turn and hierarchical level (CREDIT.md 3) and its chunked token scan (CREDIT.md 10)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from creditgym.batch import CreditBatch
from creditgym.credit import compute
from creditgym.credit.token_gae import reverse_linear_scan

from .fixtures import ATOL, close, credit_batches, few, fixture_F, fixture_F_test, loop_tests, replace

# ---------------------------------------------------------------- worked examples (CREDIT.md 1.7, 3)
F_EXPECTED = [
    ("gae", {"level": "turn", "lam": 0.5, "whiten": False},
     [[0.375, 0.25, 0], [-0.125, -0.25], [0.0625, -0.375, 0.25], [0.5, 0], [-0.5]]),
    ("gae", {"level": "turn", "lam": 0.5},
     [[1.1687, 0.7606, -0.0557], [-0.4638, -0.8719], [0.1484, -1.2800, 0.7606], [1.5768, -0.0557], [-1.6881]]),
]  # fmt: skip


test_fixture_F = fixture_F_test(F_EXPECTED)


def test_fixture_F_gae_whiten_stats() -> None:
    """Whitened = (raw - 0.017045) / 0.306297 over the 22 tokens (CREDIT.md 3)."""
    F = fixture_F()
    raw = compute("gae", F, level="turn", lam=0.5, whiten=False)
    white = compute("gae", F, level="turn", lam=0.5)
    expect = (raw.turn_BK - 0.017045) / 0.306297
    torch.testing.assert_close(white.turn_BK[F.turn_mask_BK], expect[F.turn_mask_BK], atol=ATOL, rtol=0)
    torch.testing.assert_close(white.returns_BK, raw.returns_BK)


def one_episode(truncated: bool, values: list[float], K: int) -> CreditBatch:
    """Tokens [a, b, obs, c, d], token_turn [0,0,-1,1,1], rewards [0, 1] (CREDIT.md 3 examples)."""
    tt = torch.tensor([[0, 0, -1, 1, 1]])
    rewards = torch.zeros(1, K)
    rewards[0, :2] = torch.tensor([0.0, 1.0])
    mask = torch.zeros(1, K, dtype=torch.bool)
    mask[0, :2] = True
    ids = torch.full((1, K), -1)
    ids[0, :2] = torch.tensor([0, 1])
    v = torch.zeros(1, K)
    v[0, : len(values)] = torch.tensor(values)
    return CreditBatch(
        rewards_BK=rewards,
        turn_mask_BK=mask,
        outcome_B=torch.tensor([1.0]),
        group_B=torch.tensor([0]),
        state_BK=ids,
        node_BK=ids.clone(),
        terminated_B=torch.tensor([not truncated]),
        truncated_B=torch.tensor([truncated]),
        token_turn_BT=tt,
        loss_mask_BT=tt >= 0,
        values_BK=v,
        token_values_BT=torch.tensor([[0.5, 0.4, 0.0, 0.9, 0.6]]),
    )


def test_gae_token_level_examples() -> None:
    b = one_episode(False, [], 2)
    adv = compute("gae", b, gamma=1.0, lam=0.5, whiten=False)
    assert adv.token_BT[0].tolist() == pytest.approx([0.125, 0.45, 0, -0.1, 0.4], abs=1e-6)
    assert adv.turn_BK[0].tolist() == pytest.approx([0.125, -0.1], abs=1e-6)
    bt = one_episode(True, [0, 0, 0.5], 3)
    adv = compute("gae", bt, gamma=1.0, lam=0.5, whiten=False)
    assert adv.token_BT[0].tolist() == pytest.approx([0.1875, 0.575, 0, 0.15, 0.9], abs=1e-6)


def test_gae_hierarchical_example() -> None:
    b = one_episode(False, [0.5, 0.9], 2)
    adv = compute("gae", b, level="hierarchical", gamma=1.0, lam=1.0, lam_token=0.5, whiten=False)
    assert adv.token_BT[0].tolist() == pytest.approx([0.2, 0.6, 0, -0.1, 0.4], abs=1e-6)
    assert adv.turn_BK[0].tolist() == pytest.approx([0.5, 0.1], abs=1e-6)
    assert adv.returns_BK[0].tolist() == pytest.approx([1, 1], abs=1e-6)


def test_reverse_linear_scan_hand_example() -> None:
    d = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    c = torch.tensor([[0.5, 0.0, 1.0, 0.5]], dtype=torch.float64)
    # A3 = 4, A2 = 3 + 4 = 7, A1 = 2 + 0 * 7 = 2, A0 = 1 + 0.5 * 2 = 2
    expected = torch.tensor([[2.0, 2.0, 7.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(reverse_linear_scan(d, c, chunk=2), expected)


# ---------------------------------------------------------------- loop reference vs vectorised (CREDIT.md 9.1)
test_loop_reference_matches_vectorized_float64, test_loop_reference_matches_vectorized_float32 = loop_tests("gae")


def _loop_scan(d: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    A = torch.zeros(d.shape[0], d.shape[1] + 1, dtype=d.dtype)
    for t in range(d.shape[1] - 1, -1, -1):
        A[:, t] = d[:, t] + c[:, t] * A[:, t + 1]
    return A[:, :-1]


@pytest.mark.parametrize("R,T,chunk", [(1, 8, 4), (1, 300, 64), (3, 1, 64), (2, 5, 64), (4, 130, 64), (5, 128, 64), (3, 200, 7), (2, 9, 1)])
def test_reverse_linear_scan_matches_loop(R: int, T: int, chunk: int) -> None:
    g = torch.Generator().manual_seed(R * 1000 + T)
    d = torch.randn(R, T, generator=g, dtype=torch.float64)
    u = torch.rand(R, T, generator=g, dtype=torch.float64)
    c = torch.where(u < 0.2, 0.0, torch.where(u < 0.5, 1.0, u))  # restarts, carries and decays
    d0, c0 = d.clone(), c.clone()
    torch.testing.assert_close(reverse_linear_scan(d, c, chunk), _loop_scan(d, c), atol=1e-12, rtol=1e-12)
    assert torch.equal(d, d0) and torch.equal(c, c0)  # inputs untouched


# ---------------------------------------------------------------- properties (CREDIT.md 9.3)
@few
@given(batch=credit_batches())
def test_gae_reductions(batch) -> None:
    zero_tok = torch.zeros_like(batch.token_values_BT)
    z = replace(batch, token_values_BT=zero_tok, values_BK=torch.where(batch.turn_mask_BK, 0.0, batch.values_BK))
    a = compute("gae", z, gamma=1.0, lam=1.0, whiten=False)
    n_B = batch.turn_mask_BK.sum(1)
    boot = torch.where(batch.truncated_B, batch.values_BK.gather(1, n_B.clamp(max=batch.K - 1)[:, None])[:, 0], 0.0)
    r = torch.where(batch.turn_mask_BK, batch.rewards_BK, 0.0)
    rtg = r.flip(1).cumsum(1).flip(1) + boot[:, None]
    torch.testing.assert_close(a.turn_BK, torch.where(batch.turn_mask_BK, rtg, 0.0), **close)
    t = compute("gae", batch, level="turn", gamma=0.9, lam=1.0, whiten=False)
    k = torch.arange(batch.K, dtype=r.dtype)
    D = torch.where(k[None, :] >= k[:, None], 0.9 ** (k[None, :] - k[:, None]), 0.0)
    expect = r @ D.T + 0.9 ** (n_B[:, None] - k) * boot[:, None] - batch.values_BK
    torch.testing.assert_close(t.turn_BK, torch.where(batch.turn_mask_BK, expect, 0.0), **close)
    t0 = compute("gae", batch, level="turn", gamma=0.9, lam=0.0, whiten=False)
    torch.testing.assert_close(t0.turn_BK, compute("vineppo", batch, gamma=0.9, bootstrap_truncated=True).turn_BK, **close)
    vb = batch.values_BK.clone()
    vb[torch.arange(batch.B), n_B.clamp(max=batch.K - 1)] = torch.where(batch.turn_mask_BK.all(1), vb[:, -1], 0.0)
    trunc0 = replace(batch, values_BK=vb)
    term = replace(trunc0, truncated_B=torch.zeros_like(batch.truncated_B), terminated_B=torch.ones_like(batch.terminated_B))
    torch.testing.assert_close(compute("gae", trunc0, whiten=False).token_BT, compute("gae", term, whiten=False).token_BT, **close)


@few
@given(batch=credit_batches())
def test_gae_hierarchical_gamma_token_one(batch) -> None:
    h = compute("gae", batch, level="hierarchical", gamma_token=1.0, lam_token=1.0, whiten=False)
    G_T = h.returns_BK
    idx = batch.token_turn_BT.clamp(min=0)
    expect = torch.where(batch.loss_mask_BT, G_T.gather(1, idx) - batch.token_values_BT, 0.0)
    torch.testing.assert_close(h.token_BT, expect, **close)
