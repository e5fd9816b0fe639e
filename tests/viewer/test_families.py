"""Recredit and the report on scripted-expert rollouts of every env family."""

from __future__ import annotations

import pytest

from creditgym.benchmarks.accuracy import measure_accuracy
from creditgym.store import RolloutStore
from creditgym.viewer import build_report, recredit
from creditgym.viewer.data import report_data

from ._episodes import FAMILIES, collected


@pytest.mark.parametrize("env_id", FAMILIES)
def test_recredit_and_report_on_every_family(env_id, tmp_path):
    episodes = collected(env_id)
    RolloutStore(tmp_path / "in.jsonl").extend(episodes)
    credited = recredit(RolloutStore(tmp_path / "in.jsonl").read(), "gigpo")
    assert all(len(ep.meta["credit"]["turn"]) == ep.num_turns for ep in credited)
    data = report_data(credited, {"gigpo": [ep.meta["credit"] for ep in credited]})
    assert data["tokens"], "scripted episodes decode with the byte tokenizer"
    for rec, ep in zip(data["E"], credited):
        assert rec["r"] == ep.role
        for k, (t, turn) in enumerate(zip(rec["T"], ep.turns)):
            assert len(t["L"]) == len(turn.action_ids) and t["a"].startswith(turn.action_text)
            tok = rec["A"][0]["t"][k]
            assert isinstance(tok, float) or len(tok) == len(turn.action_ids)
    assert "<script" in build_report(credited, compare="grpo").html


def test_accuracy_benchmark_saves_its_truth_for_the_viewer(tmp_path):
    path = tmp_path / "truth.jsonl"
    measure_accuracy("creditgym/Search-v0", episodes=4, group_size=2, branches=2, estimators=["grpo"],
                     save_episodes=str(path))  # fmt: skip
    episodes = RolloutStore(path).read()
    assert len(episodes) == 4
    data = report_data(episodes, {"grpo": [None] * 4})
    for rec, ep in zip(data["E"], episodes):
        assert len(rec["mc"]) == len(rec["se"]) == ep.num_turns == len(ep.meta["mc_truth"]["value"])
