import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym import CreditBatch, Episode, Turn
from creditgym.token_batch import prefix_node_ids

from ._episodes import episodes


def _ep(actions, rewards, group="g", role="agent", truncated=False, **kw):
    turns = [
        Turn(obs_ids=[100 + k], action_ids=a, reward=r, state_key=f"s{k}", probe={"gold": 0.1 * (k + 1)})
        for k, (a, r) in enumerate(zip(actions, rewards))
    ]
    return Episode(turns=turns, group_id=group, role=role, terminated=not truncated, truncated=truncated, probe0={"gold": 0.0}, **kw)


def test_hand_packed_example():
    e0 = _ep([[1, 2], [3]], [0.0, 1.0])
    e1 = _ep([[1, 2]], [0.5], truncated=True, final_obs_ids=(7, 8))
    b = CreditBatch.from_episodes([e0, e1])
    assert (b.B, b.K, b.T) == (2, 2, 5)  # K = max(2 + 0, 1 + 1)
    assert b.rewards_BK.tolist() == [[0.0, 1.0], [0.5, 0.0]]
    assert b.turn_mask_BK.tolist() == [[True, True], [True, False]]
    assert b.outcome_B.tolist() == [1.0, 0.5]
    assert b.ids_BT.tolist() == [[100, 1, 2, 101, 3], [100, 1, 2, 7, 8]]
    assert b.attention_mask_BT.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert b.token_turn_BT.tolist() == [[-1, 0, 0, -1, 1], [-1, 0, 0, -1, -1]]
    assert b.loss_mask_BT.tolist() == [[False, True, True, False, True], [False, True, True, False, False]]
    assert b.state_BK.tolist() == [[0, 1], [0, -1]]
    # same group, same first action -> same node id at turn 0
    assert b.node_BK[0, 0] == b.node_BK[1, 0] and b.node_BK[1, 1] == -1
    assert b.group_B.tolist() == [0, 0]
    assert b.terminated_B.tolist() == [True, False] and b.truncated_B.tolist() == [False, True]
    torch.testing.assert_close(b.probe_BK1, torch.tensor([[0.0, 0.1, 0.2], [0.0, 0.1, 0.0]]))


def test_groups_split_by_role_and_outcome_key():
    eps = [
        _ep([[1]], [1.0], group="m", role="attacker", outcome={"success": 1.0}),
        _ep([[2]], [-1.0], group="m", role="defender", outcome={"success": 0.0}),
        _ep([[3]], [0.0], group="n", outcome={"success": 0.0}),
    ]
    b = CreditBatch.from_episodes(eps, outcome_key="success")
    assert len(set(b.group_B.tolist())) == 3
    assert b.outcome_B.tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(KeyError, match="outcome_key"):
        CreditBatch.from_episodes(eps, outcome_key="missing")


def test_node_ids_digest_is_stable_and_prefix_closed():
    a = prefix_node_ids("g\x00agent", [[1, 2], [3]])
    assert a == prefix_node_ids("g\x00agent", [[1, 2], [3]])
    assert a[0] == prefix_node_ids("g\x00agent", [[1, 2], [4]])[0]
    assert a[1] != prefix_node_ids("g\x00agent", [[1, 2], [4]])[1]
    assert a[0] != prefix_node_ids("h\x00agent", [[1, 2]])[0]
    # fixed value guards against an accidental switch to Python's salted hash
    assert prefix_node_ids("g", [[1]]) == prefix_node_ids("g", [[1]])
    assert all(0 <= x < 2**63 for x in a)


def test_explicit_node_ids_are_used():
    e0 = _ep([[1], [2]], [0, 0], node_ids=(5, 6))
    e1 = _ep([[9], [9]], [0, 0], node_ids=(5, 7))
    b = CreditBatch.from_episodes([e0, e1])
    assert b.node_BK[0, 0] == b.node_BK[1, 0] and b.node_BK[0, 1] != b.node_BK[1, 1]


def test_probe_key_resolution():
    e = Episode(turns=[Turn(action_ids=[1], probe={"gold": 0.5, "siop": 0.2})], probe0={"gold": 0.1, "siop": 0.0})
    with pytest.raises(ValueError, match="probe_key"):
        CreditBatch.from_episodes([e])
    b = CreditBatch.from_episodes([e], probe_key="siop")
    torch.testing.assert_close(b.probe_BK1, torch.tensor([[0.0, 0.2]]))
    missing = CreditBatch.from_episodes([Episode(turns=[Turn(action_ids=[1])])], probe_key="gold")
    assert math.isnan(missing.probe_BK1[0, 0])


def test_greedy_return_packed():
    e = _ep([[1]], [1.0], meta={"greedy_return": 0.25})
    assert CreditBatch.from_episodes([e]).greedy_return_B.tolist() == [0.25]
    assert CreditBatch.from_episodes([_ep([[1]], [1.0])]).greedy_return_B is None


def test_validation_errors():
    with pytest.raises(ValueError, match="at least one"):
        CreditBatch.from_episodes([])
    with pytest.raises(ValueError, match="exactly one of terminated/truncated"):
        CreditBatch.from_episodes([Episode(turns=[Turn(action_ids=[1])], terminated=True, truncated=True)])
    with pytest.raises(ValueError, match="no action tokens"):
        CreditBatch.from_episodes([Episode(turns=[Turn(action_ids=[])])])


def test_with_values_and_to():
    b = CreditBatch.from_episodes([_ep([[1], [2]], [0, 1], truncated=True)])
    assert b.K == 3
    v = b.with_values(values_BK=torch.ones(1, 3), token_values_BT=torch.zeros(1, b.T))
    assert v.values_BK.shape == (1, 3) and b.values_BK is None
    with pytest.raises(ValueError, match="bootstrap"):
        b.with_values(values_BK=torch.ones(1, 2))
    moved = v.to("cpu")
    assert moved.values_BK.device.type == "cpu" and torch.equal(moved.ids_BT, b.ids_BT)


@given(st.lists(episodes(), min_size=1, max_size=5))
def test_packing_properties(eps):
    b = CreditBatch.from_episodes(eps)
    n_B = b.turn_mask_BK.sum(1)
    assert b.K == max(1, max(ep.num_turns + int(ep.truncated) for ep in eps))
    for i, ep in enumerate(eps):
        assert int(n_B[i]) == ep.num_turns
        # the packed ids are exactly the episode's tokens in order
        flat = [x for t in ep.turns for x in (*t.obs_ids, *t.action_ids)] + list(ep.final_obs_ids)
        assert b.ids_BT[i, : len(flat)].tolist() == flat
        assert int(b.attention_mask_BT[i].sum()) == len(flat)
        pos = 0
        for k, t in enumerate(ep.turns):
            obs = slice(pos, pos + len(t.obs_ids))
            act = slice(obs.stop, obs.stop + len(t.action_ids))
            # observation tokens never in the loss; every action token maps to its turn
            assert (b.token_turn_BT[i, obs] == -1).all() and not b.loss_mask_BT[i, obs].any()
            assert (b.token_turn_BT[i, act] == k).all()
            assert b.loss_mask_BT[i, act].tolist() == [bool(m) for m in t.action_loss_mask]
            assert b.logprobs_BT[i, act].tolist() == pytest.approx(list(t.action_logprobs), abs=1e-6)
            pos = act.stop
        assert (b.token_turn_BT[i, pos:] == -1).all() and not b.loss_mask_BT[i, pos:].any()
        assert float(b.outcome_B[i]) == pytest.approx(sum(t.reward for t in ep.turns), abs=1e-4)
    # masked action tokens never in the loss
    assert not (b.loss_mask_BT & (b.token_turn_BT < 0)).any()
    # state ids: equal keys <-> equal ids
    keys = {(i, k): t.state_key for i, ep in enumerate(eps) for k, t in enumerate(ep.turns)}
    for (i, k), key in keys.items():
        for (j, m), key2 in keys.items():
            assert (b.state_BK[i, k] == b.state_BK[j, m]) == (key == key2)
    groups = {(ep.group_id, ep.role) for ep in eps}
    assert len(set(b.group_B.tolist())) == len(groups)


# ---------------------------------------------------------------------- row-token layout


def _rows_example():
    e0 = Episode(
        turns=(Turn(obs_ids=(10, 11), action_ids=(1, 2)), Turn(obs_ids=(12,), action_ids=(3,))),
        final_obs_ids=(13,), history="window:1",
    )
    e1 = Episode(turns=(Turn(obs_ids=(100,), action_ids=(5,)), Turn(obs_ids=(101,), action_ids=(6, 7))))
    return CreditBatch.from_episodes([e0, e1])


def test_full_history_rows_are_the_episode_rows():
    b = CreditBatch.from_episodes([_ep([[1, 2], [3]], [0.0, 1.0]), _ep([[4]], [1.0], truncated=True, final_obs_ids=(9,))])
    assert b.R == b.B == 2
    assert b.ids_RT is b.ids_BT and b.attention_mask_RT is b.attention_mask_BT and b.loss_mask_RT is b.loss_mask_BT
    assert b.row_episode_R.tolist() == [0, 1] and b.row_turn_R.tolist() == [-1, -1] and b.row_start_R.tolist() == [0, 0]
    x_BT = torch.arange(b.B * b.T, dtype=torch.float32).reshape(b.B, b.T)
    on_BT = x_BT * b.attention_mask_BT  # padding takes the fill value (0)
    assert torch.equal(b.to_rows(x_BT), on_BT) and torch.equal(b.from_rows(x_BT), on_BT)


def test_row_layout_hand_example():
    b = _rows_example()
    assert b.ids_BT.tolist() == [[10, 11, 1, 2, 12, 3, 13], [100, 5, 101, 6, 7, 0, 0]]
    assert b.R == 3
    assert b.row_episode_R.tolist() == [0, 0, 1] and b.row_turn_R.tolist() == [0, 1, -1]
    assert b.row_start_R.tolist() == [0, 4, 0]
    assert b.ids_RT.tolist() == [[10, 11, 1, 2, 0], [12, 3, 0, 0, 0], [100, 5, 101, 6, 7]]
    assert b.attention_mask_RT.tolist() == [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert b.loss_mask_RT.tolist() == [[False, False, True, True, False], [False, True, False, False, False],
                                       [False, True, False, True, True]]  # fmt: skip
    assert b.token_turn_RT.tolist() == [[-1, -1, 0, 0, -1], [-1, 1, -1, -1, -1], [-1, 0, -1, 1, 1]]
    # token advantages map by index, episode layout -> rows
    adv_BT = torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.0, -1.0, 0.0], [0.0, 2.0, 0.0, 3.0, 3.0, 0.0, 0.0]])
    assert b.to_rows(adv_BT).tolist() == [[0.0, 0.0, 0.5, 0.5, 0.0], [0.0, -1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 3.0, 3.0]]
    back = b.from_rows(b.to_rows(adv_BT), fill=9.0)
    assert back.tolist() == [[0.0, 0.0, 0.5, 0.5, 0.0, -1.0, 9.0], [0.0, 2.0, 0.0, 3.0, 3.0, 9.0, 9.0]]
    # [B, K] fields are exactly what the episode layout gives
    assert b.rewards_BK.shape == (2, 2) and b.turn_mask_BK.tolist() == [[True, True], [True, True]]
    b.to("cpu").validate()


def test_row_layout_validation_names_the_problem():
    b = _rows_example()
    with pytest.raises(ValueError, match="row_start_R"):
        dataclasses.replace(b, row_start_R=torch.tensor([0, 6, 0])).validate()
    with pytest.raises(ValueError, match="one entry per row"):
        dataclasses.replace(b, row_episode_R=torch.tensor([0, 0])).validate()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(episodes(), st.booleans()), min_size=1, max_size=5), st.integers(0, 2**31 - 1))
def test_every_action_token_is_in_exactly_one_row_with_its_advantage(eps_and_mode, seed):
    eps = [dataclasses.replace(e, history="window:1" if per_turn else "full") for e, per_turn in eps_and_mode]
    b = CreditBatch.from_episodes(eps)
    adv_BT = torch.randn(b.B, b.T, generator=torch.Generator().manual_seed(seed))
    adv_RT = b.to_rows(adv_BT)
    hits = torch.zeros(b.B, b.T, dtype=torch.long)
    for r in range(b.R):
        e, start, n = int(b.row_episode_R[r]), int(b.row_start_R[r]), int(b.attention_mask_RT[r].sum())
        assert b.ids_RT[r, :n].tolist() == b.ids_BT[e, start : start + n].tolist()
        assert torch.equal(adv_RT[r, :n], adv_BT[e, start : start + n])
        hits[e, start : start + n] += 1
        if eps[e].per_turn_rows:  # a row is one turn: its prompt, then its action
            k = int(b.row_turn_R[r])
            assert b.ids_RT[r, :n].tolist() == [*eps[e].turns[k].obs_ids, *eps[e].turns[k].action_ids]
    action = b.token_turn_BT >= 0
    assert bool((hits[action] == 1).all())  # every action token exactly once
    assert int(b.loss_mask_RT.sum()) == int(b.loss_mask_BT.sum())
    assert torch.equal(b.to_rows(b.loss_mask_BT, False), b.loss_mask_RT)
    assert torch.equal(b.from_rows(adv_RT)[action], adv_BT[action])


def test_to_keeps_shared_row_tensors_shared():
    b = CreditBatch.from_episodes([_ep([[1, 2]], [1.0])]).to("meta")  # a real move, no memory
    assert b.ids_RT is b.ids_BT and b.loss_mask_RT is b.loss_mask_BT


def test_row_mapping_runs_on_the_batch_device():
    b = _rows_example().to("meta")  # every index tensor must follow the batch (GPU in training)
    x_RT = b.to_rows(torch.zeros(b.B, b.T, device="meta"))
    assert x_RT.device.type == "meta" and tuple(x_RT.shape) == (3, 5)
