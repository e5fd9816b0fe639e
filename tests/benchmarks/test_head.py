"""`creditgym bench head`: both sides of the LM-head benchmark run on the same batches and report."""

from __future__ import annotations

from pathlib import Path


def test_head_bench_times_both_sides(tiny_cache: Path) -> None:
    from _trainer_helpers import build_tiny

    from creditgym.benchmarks.head import expert_batches, time_head_passes

    policy = build_tiny(tiny_cache)
    batches = expert_batches(policy, n_batches=2, batch_episodes=4, seed=0)
    assert len(batches) == 2 and all(b.B == 4 for b in batches)
    r = time_head_passes(policy, batches)
    assert r["full_head_s"] > 0 and r["mask_head_s"] > 0 and r["speedup"] > 0
    assert 0 < r["loss_token_frac"] < 0.5  # action tokens are a minority of a search episode
    assert all(p.grad is None for p in policy.model.parameters())
