"""Offline re-credit: round trip through RolloutStore, user estimators, run directories, needs errors."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from creditgym import CreditBatch
from creditgym.credit import compute
from creditgym.store import RolloutStore
from creditgym.trajectory import MC_ROLLOUT
from creditgym.viewer import load_estimator, read_episodes, recredit

from ._episodes import hand_built

USER_ESTIMATOR = '''
from creditgym.credit import make_advantages, register_estimator

@register_estimator("viewer_test_outcome")
def outcome_only(batch, scale=1.0):
    """Every turn gets its episode's outcome times `scale`."""
    return make_advantages(batch, batch.outcome_B[:, None] * batch.turn_mask_BK * scale)
'''
PLAIN_ESTIMATOR = '''
from creditgym.credit import make_advantages

def negated(batch):
    return make_advantages(batch, -batch.outcome_B[:, None] * batch.turn_mask_BK)
'''


def _expected(episodes, name, **cfg):
    batch = CreditBatch.from_episodes(episodes)
    adv = compute(name, batch, **cfg)
    turn = [adv.turn_BK[b, : ep.num_turns].tolist() for b, ep in enumerate(episodes)]
    token = [[adv.token_BT[b][batch.token_turn_BT[b] == k].tolist() for k in range(ep.num_turns)]
             for b, ep in enumerate(episodes)]  # fmt: skip
    return turn, token


@pytest.mark.parametrize(("name", "cfg"), [("grpo", {}), ("gigpo", {"gamma": 0.9}), ("reinforce++", {}), ("igpo", {})])
def test_round_trip_matches_compute(tmp_path, name, cfg):
    episodes = hand_built()
    RolloutStore(tmp_path / "in.jsonl").extend(episodes)
    credited = recredit(RolloutStore(tmp_path / "in.jsonl").read(), name, **cfg)
    RolloutStore(tmp_path / "out.jsonl").extend(credited)
    back = RolloutStore(tmp_path / "out.jsonl").read()
    turn, token = _expected(episodes, name, **cfg)
    for b, ep in enumerate(back):
        credit = ep.meta["credit"]
        assert credit["estimator"] == name and credit["cfg"] == cfg
        assert torch.allclose(torch.tensor(credit["turn"]), torch.tensor(turn[b]), atol=1e-6)
        for k, t in enumerate(ep.turns):
            assert len(credit["token"][k]) == len(t.action_ids)
            assert torch.allclose(torch.tensor(credit["token"][k]), torch.tensor(token[b][k]), atol=1e-6)
        assert dataclasses.replace(ep, meta={}) == dataclasses.replace(episodes[b], meta={})  # nothing else changed


def test_user_estimator_from_file_and_module(tmp_path, monkeypatch):
    path = tmp_path / "my_credit.py"
    path.write_text(USER_ESTIMATOR + PLAIN_ESTIMATOR)
    episodes = hand_built()
    outcome = [ep.total_reward for ep in episodes]
    registered = recredit(episodes, f"{path}:viewer_test_outcome", scale=2.0)
    assert [ep.meta["credit"]["turn"][0] for ep in registered] == [2.0 * r for r in outcome]
    assert registered[0].meta["credit"]["estimator"] == "viewer_test_outcome"
    plain = recredit(episodes, f"{path}:negated")
    assert [ep.meta["credit"]["turn"][-1] for ep in plain] == [-r for r in outcome]
    (tmp_path / "my_module.py").write_text(PLAIN_ESTIMATOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    name, fn = load_estimator("my_module:negated")
    assert name == "negated" and callable(fn)
    with pytest.raises(KeyError, match="defines no estimator"):
        load_estimator(f"{path}:nothing_here")
    with pytest.raises(KeyError, match=r"file\.py:NAME"):
        load_estimator("no_such_estimator")


def test_run_directory_as_input(tmp_path):
    episodes = hand_built()
    RolloutStore(tmp_path / "episodes.jsonl").extend(episodes)
    assert read_episodes(tmp_path) == episodes
    with pytest.raises(FileNotFoundError, match="run directory"):
        read_episodes(tmp_path / "missing")


@pytest.mark.parametrize(
    ("name", "what"),
    [("igpo", "GoldAnswerProbe"), ("siop", "SIOPProbe"), ("vineppo", "Collector.branch"),
     ("gae", "PPOTrainer"), ("remax", "greedy_baseline=True")],
)  # fmt: skip
def test_missing_inputs_say_what_to_supply(name, what):
    episodes = [dataclasses.replace(ep, probe0={}, turns=tuple(dataclasses.replace(t, probe={}) for t in ep.turns))
                for ep in hand_built()]  # fmt: skip
    with pytest.raises(ValueError, match=re.escape(what)):
        recredit(episodes, name)


def test_rollouts_and_excluded_groups_keep_no_credit():
    episodes = hand_built()
    marked = [dataclasses.replace(ep, meta={MC_ROLLOUT: True}) if i == 0 else ep for i, ep in enumerate(episodes)]
    out = recredit(marked, "grpo")
    assert "credit" not in out[0].meta and all("credit" in ep.meta for ep in out[1:])
    bad = dataclasses.replace(episodes[0], turns=(dataclasses.replace(episodes[0].turns[0], reward=math.nan),
                                                  *episodes[0].turns[1:]))  # fmt: skip
    out = recredit([bad, *episodes[1:]], "grpo")  # its whole group (g0) is dropped, as in training
    assert [("credit" in ep.meta) for ep in out] == [ep.group_id != "g0" for ep in episodes]
