"""What every estimator does (CREDIT.md 9.3, 10): permuting episodes permutes outputs, other groups do
not change a group, dtypes are kept and calls repeat, CPU and GPU agree, and row blocks and the chunked
token scan give the loop references' results.

The hypothesis batches have T < 64 and fit one row block, so the block tests shrink the block and
chunk sizes: many row blocks (the last one partial), many scan chunks, and padding when T is not a
multiple of the chunk."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import creditgym.credit.token_gae as token_gae
import creditgym.credit.token_layout as token_layout
from creditgym.benchmarks.credit import synthetic_batch
from creditgym.credit import REFERENCES, compute
from creditgym.credit.advantages import token_counts

from .fixtures import CASES, assert_same, brief, case_ids, cast, close, credit_batches, replace


@pytest.mark.parametrize("name,cfg", CASES[::3], ids=[n for n, _ in CASES[::3]])
@brief
@given(batch=credit_batches(), seed=st.integers(0, 2**16))
def test_permuting_episodes_permutes_outputs(name, cfg, batch, seed) -> None:
    perm = torch.randperm(batch.B, generator=torch.Generator().manual_seed(seed))
    permuted = {
        f.name: getattr(batch, f.name)[perm]
        for f in dataclasses.fields(batch)
        if isinstance(getattr(batch, f.name), torch.Tensor)
    }
    a, b = compute(name, batch, **cfg), compute(name, replace(batch, **permuted), **cfg)
    torch.testing.assert_close(a.turn_BK[perm], b.turn_BK, **close)
    torch.testing.assert_close(a.token_BT[perm], b.token_BT, **close)


BATCH_WIDE = {"reinforce++", "rebn", "pvd"}  # pvd: the batch-wide prior couples groups (its own test covers prior=0)


@pytest.mark.parametrize("name,cfg", [c for c in CASES[1::2] if c[0] not in BATCH_WIDE], ids=lambda x: str(x))
@brief
@given(batch=credit_batches())
def test_other_groups_do_not_change_a_group(name, cfg, batch) -> None:
    if name == "gae" and cfg.get("whiten", True):
        return
    if name == "reinforce++_baseline":
        return  # batch whitening couples groups
    other = batch.group_B != batch.group_B[0]
    o = other.to(batch.rewards_BK.dtype)

    def shake(x, dim_extra=True):
        if x is None:
            return None
        w = o[:, None] if x.dim() == 2 else o
        return x * (1 + w) + 0.3 * w

    changed = replace(
        batch,
        rewards_BK=shake(batch.rewards_BK),
        outcome_B=shake(batch.outcome_B),
        values_BK=shake(batch.values_BK),
        token_values_BT=shake(batch.token_values_BT),
        probe_BK1=shake(batch.probe_BK1),
        greedy_return_B=shake(batch.greedy_return_B),
    )
    a, b = compute(name, batch, **cfg), compute(name, changed, **cfg)
    keep = ~other
    torch.testing.assert_close(a.turn_BK[keep], b.turn_BK[keep], **close)
    torch.testing.assert_close(a.token_BT[keep], b.token_BT[keep], **close)


@pytest.mark.parametrize("name,cfg", CASES[::4], ids=[n for n, _ in CASES[::4]])
@brief
@given(batch=credit_batches())
def test_float32_float64_dtype_kept_and_calls_repeat(name, cfg, batch) -> None:
    a64 = compute(name, batch, **cfg)
    b32 = cast(batch, torch.float32)
    a32, again = compute(name, b32, **cfg), compute(name, b32, **cfg)
    assert a64.turn_BK.dtype == torch.float64 and a32.turn_BK.dtype == torch.float32
    assert a32.token_BT.dtype == torch.float32 and a32.turn_BK.device == b32.device
    torch.testing.assert_close(a32.turn_BK.double(), a64.turn_BK, atol=2e-3, rtol=1e-3)
    assert torch.equal(a32.turn_BK, again.turn_BK) and torch.equal(a32.token_BT, again.token_BT)
    assert a32.metrics == again.metrics


@pytest.mark.gpu
@pytest.mark.parametrize("name,cfg", CASES, ids=case_ids(CASES))
@settings(max_examples=5)
@given(batch=credit_batches())
def test_cpu_and_gpu_agree(name, cfg, batch) -> None:
    cpu = compute(name, batch, **cfg)
    gpu = compute(name, batch.to("cuda"), **cfg)
    assert gpu.turn_BK.device.type == "cuda" and gpu.token_BT.device.type == "cuda"
    torch.testing.assert_close(gpu.turn_BK.cpu(), cpu.turn_BK, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(gpu.token_BT.cpu(), cpu.token_BT, atol=1e-9, rtol=1e-9)
    for key, value in cpu.metrics.items():
        assert gpu.metrics[key] == pytest.approx(value, abs=1e-9)


# ---------------------------------------------------------------- row blocks and scan chunks (CREDIT.md 10)
@pytest.fixture
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # constant module settings for the whole test: safe to share across hypothesis inputs
    monkeypatch.setattr(token_layout, "CPU_BLOCK_ELEMS", 40)  # a few rows per block at these T
    monkeypatch.setattr(token_gae, "GAE_BLOCK_ELEMS", 40)
    monkeypatch.setattr(token_gae, "CHUNK", 4)


@pytest.mark.parametrize("name,cfg", CASES, ids=case_ids(CASES))
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
def test_synthetic_long_rows_match_loop_reference(monkeypatch: pytest.MonkeyPatch, label: str, name: str, cfg: dict) -> None:
    """Rows of T = 300 (not a multiple of the 64-token chunk): several chunks, padding, 2 blocks."""
    batch = cast(synthetic_batch(12, 6, 300, seed=3, group_size=4), torch.float64)
    monkeypatch.setattr(token_layout, "CPU_BLOCK_ELEMS", 7 * 300)
    assert_same(compute(name, batch, **cfg), REFERENCES[name](batch, **cfg), batch, atol=1e-10)


def test_token_counts_match_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = synthetic_batch(9, 5, 40, seed=1, group_size=3)
    monkeypatch.setattr(token_layout, "CPU_BLOCK_ELEMS", 4 * 40)  # 3 blocks, the last one partial
    w = token_counts(batch, torch.float64)
    tt, lm = batch.token_turn_BT.tolist(), batch.loss_mask_BT.tolist()
    expected = [[sum(1 for t in range(40) if tt[b][t] == k and lm[b][t]) for k in range(5)] for b in range(9)]
    assert w.tolist() == expected
