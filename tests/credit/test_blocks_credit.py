"""Row blocks and the chunked token scan (CREDIT.md 10) give the loop references' results.

The hypothesis batches of the other tests have T < 64 and fit one row block, so here the block and
chunk sizes are shrunk: many row blocks (the last one partial), many scan chunks, and padding when
T is not a multiple of the chunk."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import creditgym.credit.ops as ops
import creditgym.credit.token_gae as token_gae
from creditgym.credit import compute
from creditgym.credit.bench import synthetic_batch
from creditgym.credit.ops import reverse_linear_scan
from creditgym.credit.reference import REFERENCES

from .cases import CASES
from .fixtures import cast, credit_batches
from .test_reference_vs_vectorized_credit import assert_same


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


def test_reverse_linear_scan_hand_example() -> None:
    d = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    c = torch.tensor([[0.5, 0.0, 1.0, 0.5]], dtype=torch.float64)
    # A3 = 4, A2 = 3 + 4 = 7, A1 = 2 + 0 * 7 = 2, A0 = 1 + 0.5 * 2 = 2
    expected = torch.tensor([[2.0, 2.0, 7.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(reverse_linear_scan(d, c, chunk=2), expected)


@pytest.fixture
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # constant module settings for the whole test: safe to share across hypothesis inputs
    monkeypatch.setattr(ops, "CPU_BLOCK_ELEMS", 40)  # a few rows per block at these T
    monkeypatch.setattr(token_gae, "GAE_BLOCK_ELEMS", 40)
    monkeypatch.setattr(token_gae, "CHUNK", 4)


@pytest.mark.parametrize("name,cfg", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=credit_batches())
def test_tiny_blocks_match_loop_reference(tiny_blocks: None, name, cfg, batch) -> None:
    assert_same(compute(name, batch, **cfg), REFERENCES[name](batch, **cfg), batch, atol=1e-10)


@pytest.mark.parametrize("label,name,cfg", [
    ("grpo", "grpo", {}), ("reinforce++", "reinforce++", {}), ("reinforce++_g", "reinforce++", {"gamma": 0.9}),
    ("gae", "gae", {}), ("gae_turn", "gae", {"level": "turn"}), ("gae_h", "gae", {"level": "hierarchical"}),
    ("gae_h_decay", "gae", {"level": "hierarchical", "gamma_token": 0.9, "lam_token": 0.8}),
    ("gae_lam0", "gae", {"lam": 0.0}), ("spo_prob", "spo", {"prob_mask": True}),
])  # fmt: skip
def test_synthetic_long_rows_match_loop_reference(label: str, name: str, cfg: dict) -> None:
    """Rows of T = 300 (not a multiple of the 64-token chunk): several chunks, padding, 2 blocks."""
    batch = cast(synthetic_batch(12, 6, 300, seed=3, group_size=4), torch.float64)
    ops_elems = ops.CPU_BLOCK_ELEMS
    try:
        ops.CPU_BLOCK_ELEMS = 7 * 300
        assert_same(compute(name, batch, **cfg), REFERENCES[name](batch, **cfg), batch, atol=1e-10)
    finally:
        ops.CPU_BLOCK_ELEMS = ops_elems


def test_token_counts_match_loop() -> None:
    from creditgym.credit.advantages import token_counts

    batch = synthetic_batch(9, 5, 40, seed=1, group_size=3)
    ops_elems = ops.CPU_BLOCK_ELEMS
    try:
        ops.CPU_BLOCK_ELEMS = 4 * 40  # 3 blocks, the last one partial
        w = token_counts(batch, torch.float64)
    finally:
        ops.CPU_BLOCK_ELEMS = ops_elems
    tt, lm = batch.token_turn_BT.tolist(), batch.loss_mask_BT.tolist()
    expected = [[sum(1 for t in range(40) if tt[b][t] == k and lm[b][t]) for k in range(5)] for b in range(9)]
    assert w.tolist() == expected
