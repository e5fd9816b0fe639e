"""Smoke test of `creditgym bench rollout`'s measuring function (numbers are not asserted: never a timed test)."""

from __future__ import annotations

import creditgym_test_rollout_fakes as F  # loaded by tests/benchmarks/conftest.py

from creditgym.agents import ScriptedPolicy
from creditgym.benchmarks.rollout import forward_timer, run_one


def test_run_one_reports_the_fields():
    row = run_one("scripted", ScriptedPolicy.for_env("GuessNumber-v0"), "GuessNumber-v0", 4, 2, 16, 0)
    assert row["episodes"] == 4 and row["turns"] >= 4 and row["action_tokens"] > 0
    assert 0.0 <= row["collector_share"] <= 1.0 and row["outside_forward_share"] == 1.0
    assert row["success"] == 1.0


def test_forward_timer_counts_model_calls():
    policy = F.TorchBytePolicy(seed=0)
    import torch

    with forward_timer(policy.model) as acc:
        policy.model(torch.zeros(1, 3, dtype=torch.long))
    assert acc[0] > 0.0
    policy.model(torch.zeros(1, 3, dtype=torch.long))  # hooks removed: no error, no count
    assert not policy.model._forward_hooks and not policy.model._forward_pre_hooks
