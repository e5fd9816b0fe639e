"""CREDIT.md 9.3: the reductions of each section and the properties every estimator has."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings

from creditgym.batch import CreditBatch
from creditgym.credit import compute

from .cases import CASES
from .fixtures import cast, credit_batches

few = settings(max_examples=6)
brief = settings(max_examples=4)
close = dict(atol=1e-8, rtol=1e-8)


def group_sizes(batch: CreditBatch) -> torch.Tensor:
    """Per episode: the number of episodes with turns in its group."""
    has = batch.turn_mask_BK.any(1)
    same = batch.group_B[:, None] == batch.group_B[None, :]
    return (same & has[None, :]).sum(1)


def replace(batch: CreditBatch, **kw) -> CreditBatch:
    return dataclasses.replace(batch, **kw)


def distinct_ids(batch: CreditBatch) -> torch.Tensor:
    ids = torch.arange(batch.B * batch.K).view(batch.B, batch.K)
    return torch.where(batch.turn_mask_BK, ids, -1)


# ---------------------------------------------------------------- every estimator
@pytest.mark.parametrize("name,cfg", CASES[::3], ids=[n for n, _ in CASES[::3]])
@brief
@given(batch=credit_batches(), seed=__import__("hypothesis").strategies.integers(0, 2**16))
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
@pytest.mark.parametrize("name,cfg", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
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


# ---------------------------------------------------------------- outcome baselines (2)
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


# ---------------------------------------------------------------- gae (3)
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


# ---------------------------------------------------------------- turn level (4)
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


# ---------------------------------------------------------------- gigpo (5), trees (6), segments (7), 8
@few
@given(batch=credit_batches())
def test_gigpo_reductions(batch) -> None:
    distinct = replace(batch, state_BK=distinct_ids(batch))
    for norm, base in (("std", "grpo"), ("mean", "dr_grpo")):
        g = compute("gigpo", distinct, norm=norm, episode_stats="episodes").turn_BK
        torch.testing.assert_close(g, compute(base, batch).turn_BK, **close)
    e = compute("gigpo", batch, omega=0.0).turn_BK
    torch.testing.assert_close(e, compute("gigpo", distinct).turn_BK, **close)


@few
@given(batch=credit_batches())
def test_tree_reductions(batch) -> None:
    flat = replace(batch, node_BK=distinct_ids(batch))
    grpo = compute("grpo", batch).turn_BK
    torch.testing.assert_close(compute("tree", flat).turn_BK, grpo, **close)
    torch.testing.assert_close(compute("tree", flat, leaf="raw").turn_BK, compute("dr_grpo", batch).turn_BK, **close)
    torch.testing.assert_close(compute("tree", batch, beta=0.0).turn_BK, grpo, **close)
    torch.testing.assert_close(compute("tree_grpo", flat).turn_BK, grpo, **close)
    one_tree = replace(batch, node_BK=torch.where(batch.turn_mask_BK, batch.group_B[:, None] * 0 + 10**6 + batch.group_B[:, None], -1))
    one_tree = replace(one_tree, node_BK=torch.where(torch.arange(batch.K)[None, :] == 0, one_tree.node_BK, distinct_ids(batch)))
    big = (group_sizes(batch) >= 2)[:, None] & batch.turn_mask_BK
    torch.testing.assert_close(compute("tree_grpo", one_tree).turn_BK[big], 2 * grpo[big], atol=1e-6, rtol=1e-6)


@few
@given(batch=credit_batches())
def test_segment_reductions(batch) -> None:
    v = compute("vineppo", batch)
    torch.testing.assert_close(compute("spo", batch).turn_BK, v.turn_BK, **close)
    term = batch.terminated_B & batch.turn_mask_BK.any(1)
    total = v.turn_BK.sum(1)
    expect = batch.rewards_BK.sum(1) - batch.values_BK[:, 0]
    torch.testing.assert_close(total[term], expect[term], **close)


@few
@given(batch=credit_batches())
def test_siop_zero_mass_gives_zero(batch) -> None:
    z = replace(batch, outcome_B=torch.zeros_like(batch.outcome_B), probe_BK1=torch.zeros_like(batch.probe_BK1))
    assert bool((compute("siop", z).turn_BK == 0).all())
