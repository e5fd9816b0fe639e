import json

import pytest
from hypothesis import given

from creditgym import Episode, TaskSpec, Turn

from ._episodes import episodes


def test_turn_defaults_fill_masks_and_logprobs():
    t = Turn(obs_ids=[1, 2], action_ids=[3, 4, 5])
    assert t.action_loss_mask == (1, 1, 1)
    assert t.action_logprobs == (0.0, 0.0, 0.0)
    assert isinstance(t.obs_ids, tuple)


def test_turn_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="action_logprobs"):
        Turn(action_ids=[1, 2], action_logprobs=[0.0])
    with pytest.raises(ValueError, match="action_loss_mask"):
        Turn(action_ids=[1, 2], action_loss_mask=[1])
    with pytest.raises(ValueError, match="0 or 1"):
        Turn(action_ids=[1], action_loss_mask=[2])


def test_episode_defaults_let_tests_build_by_hand():
    ep = Episode(turns=[Turn(action_ids=[1], reward=0.5)])
    assert ep.terminated and not ep.truncated
    assert ep.node_ids is None and ep.probe0 == {} and ep.role == "agent"
    assert ep.total_reward == 0.5 and ep.num_turns == 1
    assert isinstance(ep.group_id, str) and ep.episode_id


def test_episode_node_ids_length_checked():
    with pytest.raises(ValueError, match="node_ids"):
        Episode(turns=[Turn(action_ids=[1])], node_ids=(1, 2))


def test_episode_keeps_reset_options():
    ep = Episode(meta={"options": {"task_id": "x"}})
    assert ep.options == {"task_id": "x"}


@given(episodes())
def test_json_round_trip_is_exact(ep):
    back = Episode.from_json(ep.to_json())
    assert back == ep
    assert json.loads(back.to_json()) == json.loads(ep.to_json())


def test_taskspec():
    spec = TaskSpec("easy", {"hops": (1, 1)})
    assert spec.task_id is None and spec.category == "easy"


def test_history_round_trips_and_defaults_to_full():
    ep = Episode(turns=(Turn(obs_ids=(1,), action_ids=(2,)),), history="window:1")
    assert ep.per_turn_rows and Episode.from_json(ep.to_json()) == ep
    assert not Episode().per_turn_rows and Episode.from_dict({"turns": []}).history == "full"
