"""`creditgym bench async`: every variant runs from the same weights and reports its stage times."""

from __future__ import annotations

from pathlib import Path

import torch


def test_async_bench_runs_every_variant_from_the_same_weights(tiny_cache: Path) -> None:
    from _trainer_helpers import build_tiny, params_vector, register_letter_env

    from creditgym.benchmarks.async_collect import VARIANTS, run_variants

    env_id = register_letter_env()
    policy = build_tiny(tiny_cache)
    start = params_vector(policy.model).clone()
    config = dict(steps=3, num_groups=2, group_size=2, max_new_tokens=4, lr=1e-3, seed=0)
    rows = run_variants(policy, env_id, config)
    assert [r["run"] for r in rows] == [label for label, _, _ in VARIANTS]
    assert all(r["wall_s"] > 0 and r["update_s"] > 0 for r in rows)
    sync, _, stale = rows
    assert "collect_s" not in sync and stale["gap_max"] == 1.0 and 0 <= stale["hidden_frac"] <= 1
    # the first step's batch is the same under every variant (version 0 generates it)
    assert sync["reward_first"] == stale["reward_first"]
    assert not torch.equal(start, params_vector(policy.model))
