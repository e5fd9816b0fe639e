"""`creditgym bench train`: the arithmetic task and creditgym's timed side at a one-step budget."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_arith_reward_reads_the_first_number() -> None:
    from creditgym.benchmarks.train import arith_question, arith_reward

    q, ans = arith_question(7)
    assert q.startswith("What is ") and q.endswith("?")
    a, b = (int(x) for x in q[len("What is ") : -1].split("+"))
    assert a + b == ans
    assert arith_reward(f"It is {ans}.", ans) == 1.0
    assert arith_reward(f"{ans + 1} or {ans}", ans) == 0.0
    assert arith_reward("no number", ans) == 0.0


@pytest.mark.parametrize("skip", [True, False])
def test_creditgym_side_reports_speed_memory_and_stages(tiny_cache: Path, tmp_path: Path, skip: bool) -> None:
    from _trainer_helpers import build_tiny

    from creditgym.benchmarks.train import run_creditgym

    model_dir = str(build_tiny(tiny_cache).save(tmp_path / "model"))
    out: list[dict] = []

    class _Q:
        def put(self, item: dict) -> None:
            out.append(item)

    run_creditgym(model_dir, 1, 1, _Q(), skip)
    (r,) = out
    assert r["name"] == "creditgym" and r["s_per_step"] > 0 and r["tokens_per_s"] > 0 and r["peak_rss_mb"] > 0
    assert {"time/rollout_s", "time/credit_s", "time/update_s"} <= set(r["stages_s_per_step"])
