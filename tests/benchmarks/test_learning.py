"""Learning-study summaries (benchmarks/learning.py): worked examples, AUC against numpy's trapezoid
rule, and properties of the threshold and the accuracy-vs-learning correlation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditgym.benchmarks.learning import accuracy_vs_learning, auc, episodes_to, merge_studies, summarize


def test_summary_by_hand() -> None:
    res = {"a": {0: [0.0, 0.2, 0.4], 1: [0.0, 0.4, 0.4]}, "b": {0: [0.0, 0.0, 0.2], 1: [0.0, 0.2, 0.2]}}
    out = summarize(res, [0, 10, 20], threshold=0.3)
    assert out["threshold"] == 0.3
    assert out["table"]["a"]["episodes_to_threshold"] == [20, 10] and out["table"]["a"]["reached"] == 2
    assert out["table"]["b"]["episodes_to_threshold"] == [None, None] and out["table"]["b"]["reached"] == 0
    # AUC of run a0: (10 * 0.1 + 10 * 0.3) / 20 = 0.2; of a1: (10 * 0.2 + 10 * 0.4) / 20 = 0.3
    assert abs(out["table"]["a"]["auc_mean"] - 0.25) < 1e-12 and abs(out["table"]["a"]["auc_sd"] - 0.05) < 1e-12
    assert [r["mean"] for r in out["table"]["a"]["curve"]] == [0.0, 0.30000000000000004, 0.4]
    # default threshold: halfway from the start (0) to the best mean (a's 0.4 at 20 episodes)
    assert abs(summarize(res, [0, 10, 20], threshold=None)["threshold"] - 0.2) < 1e-12


def test_accuracy_vs_learning_by_hand() -> None:
    table = {"grpo": {"auc_mean": 0.0266}, "rebn": {"auc_mean": 0.0273}, "pvd": {"auc_mean": 0.0366},
             "turn_return": {"auc_mean": 0.0281}, "new": {"auc_mean": 0.5}}  # fmt: skip
    report = {"rows": [{"name": "grpo", "spearman": 0.36}, {"name": "rebn", "spearman": 0.45},
                       {"name": "pvd", "spearman": 0.69}, {"name": "turn_return", "spearman": 0.32},
                       {"name": "gae", "spearman": None}]}  # fmt: skip
    out = accuracy_vs_learning(table, report)
    assert out["estimators"] == ["grpo", "rebn", "pvd", "turn_return"]  # "new" has no accuracy row, gae none
    # accuracy ranks (2, 3, 4, 1), AUC ranks (1, 2, 4, 3): sum d^2 = 6, rho = 1 - 6 * 6 / (4 * 15) = 0.4
    assert abs(out["spearman_accuracy_auc"] - 0.4) < 1e-12


curves = st.integers(2, 8).flatmap(
    lambda n: st.tuples(st.lists(st.floats(0, 1), min_size=n, max_size=n),
                        st.lists(st.integers(1, 50), min_size=n - 1, max_size=n - 1))
)  # fmt: skip


@given(curves)
def test_auc_is_the_trapezoid_rule_over_the_budget(data) -> None:
    curve, steps = data
    samples = np.concatenate([[0], np.cumsum(steps)]).tolist()
    assert abs(auc(curve, samples) - np.trapezoid(curve, samples) / samples[-1]) < 1e-9
    assert min(curve) - 1e-12 <= auc(curve, samples) <= max(curve) + 1e-12


@given(curves, st.floats(0, 1))
def test_episodes_to_is_the_first_evaluation_at_the_level(data, level) -> None:
    curve, steps = data
    samples = np.concatenate([[0], np.cumsum(steps)]).tolist()
    got = episodes_to(curve, samples, level)
    hits = [n for n, s in zip(samples, curve) if s >= level]
    assert got == (hits[0] if hits else None)


def _report(results, samples, final=None, **meta):
    out = {"env_id": "e", "env_kwargs": {}, "metric": "success", "start": 0.0, "budget_episodes": samples[-1], **meta,
           **summarize(results, samples, None)}  # fmt: skip
    for name, f in (final or {}).items():
        out["table"][name]["final"] = f
    return out


def test_merge_studies_equals_one_study_run_in_one_process() -> None:
    samples = [0, 10, 20]
    a = {"grpo": {0: [0.0, 0.2, 0.4], 1: [0.0, 0.4, 0.4]}}
    b = {"pvd": {0: [0.0, 0.6, 0.8]}, "grpo": {2: [0.0, 0.0, 0.1]}}
    merged = merge_studies([_report(a, samples, {"grpo": {"success": 0.4}}),
                            _report(b, samples, {"grpo": {"success": 0.1}, "pvd": {"success": 0.8}})])  # fmt: skip
    whole = summarize({"grpo": {**a["grpo"], **b["grpo"]}, "pvd": b["pvd"]}, samples, None)
    assert merged["threshold"] == whole["threshold"] == 0.4  # halfway to pvd's 0.8, over both reports
    for name in ("grpo", "pvd"):
        row = {k: v for k, v in merged["table"][name].items() if k not in ("final", "final_by_seed")}
        assert row == whole["table"][name]
    # reports without per-seed finals: each seed gets its report's mean, (2 * 0.4 + 1 * 0.1) / 3
    assert abs(merged["table"]["grpo"]["final"]["success"] - 0.3) < 1e-12
    assert merged["table"]["grpo"]["final_by_seed"] == {"0": {"success": 0.4}, "1": {"success": 0.4}, "2": {"success": 0.1}}
    assert merged["env_id"] == "e" and merged["budget_episodes"] == 20


def test_final_metrics_per_seed_merge_like_one_process() -> None:
    samples = [0, 10]
    curves = {"grpo": {0: [0.0, 0.2], 1: [0.0, 0.4], 2: [0.0, 0.3]}}
    finals = {"grpo": {0: {"success": 0.2, "tool_calls": 1.0}, 1: {"success": 0.4, "tool_calls": 3.0},
                       2: {"success": 0.3}}}  # fmt: skip
    whole = summarize(curves, samples, None, finals)
    # the mean over seeds of the keys every seed has; the per-seed values are kept
    assert whole["table"]["grpo"]["final"] == pytest.approx({"success": 0.3})
    assert whole["table"]["grpo"]["final_by_seed"]["1"] == {"success": 0.4, "tool_calls": 3.0}

    def part(seeds: list[int]) -> dict:
        out = _report({"grpo": {s: curves["grpo"][s] for s in seeds}}, samples)
        out["table"]["grpo"].update(summarize({"grpo": {s: curves["grpo"][s] for s in seeds}}, samples, None,
                                              {"grpo": {s: finals["grpo"][s] for s in seeds}})["table"]["grpo"])  # fmt: skip
        return out

    merged = merge_studies([part([0, 1]), part([2])])
    assert merged["table"]["grpo"] == whole["table"]["grpo"]


def test_merge_studies_refuses_what_is_not_one_study() -> None:
    samples = [0, 10]
    one = _report({"grpo": {0: [0.0, 0.1]}}, samples)
    with pytest.raises(ValueError, match="appears in two reports"):
        merge_studies([one, one])
    with pytest.raises(ValueError, match=r"differ in \['start'\]"):
        merge_studies([one, _report({"pvd": {0: [0.1, 0.2]}}, samples, start=0.1)])
    with pytest.raises(ValueError, match="other episode counts"):
        merge_studies([one, _report({"pvd": {0: [0.0, 0.1, 0.2]}}, [0, 5, 10], budget_episodes=10)])
    with pytest.raises(ValueError, match="no reports"):
        merge_studies([])
