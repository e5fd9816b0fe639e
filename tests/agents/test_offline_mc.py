"""agents.offline: Monte-Carlo values from branch rollouts, expert and SFT datasets."""

from __future__ import annotations

import creditgym_test_rollout_fakes as F  # loaded by tests/agents/conftest.py
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from creditgym import CreditBatch, Episode, Turn
from creditgym.agents import Collector, Sampling
from creditgym.agents.offline import expert_episodes, load_episodes, mc_values, return_to_go, sft_examples


def _ep(actions, rewards, group="g", truncated=False, eid=None):
    turns = tuple(Turn(obs_ids=[0], action_ids=[a], reward=r) for a, r in zip(actions, rewards))
    kw = {"episode_id": eid} if eid else {}
    return Episode(turns=turns, group_id=group, terminated=not truncated, truncated=truncated, **kw)


def test_return_to_go():
    assert return_to_go([1.0, 0.0, 2.0], 0.5) == [1.5, 1.0, 2.0]


def test_mc_values_hand_computed():
    e0 = _ep([1, 2], [0.0, 1.0])
    e1 = _ep([1, 3], [0.0, 0.0], truncated=True)
    e2 = _ep([4], [1.0])
    v = mc_values([e0, e1, e2])
    assert v.shape == (3, 3)  # K = max(n_b + truncated_b) = 3
    torch.testing.assert_close(v, torch.tensor([[0.5, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.0, 0.0]]))
    v_self = mc_values([e0, e1, e2], exclude_self=False)
    assert v_self[0].tolist() == pytest.approx([2 / 3, 0.5, 0.0])
    v_g = mc_values([e0, e1, e2], gamma=0.5, exclude_self=False)
    assert v_g[0, 0] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    # a lone episode falls back to its own return-to-go; other groups never mix
    lone = _ep([1, 2], [0.0, 1.0], group="h")
    torch.testing.assert_close(mc_values([lone, e2]), torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    # rollouts only add evidence, rows follow `episodes`
    br = _ep([1, 5], [0.0, 0.5])
    assert mc_values([e0], [e1, e2, br])[0].tolist() == pytest.approx([(0.0 + 1.0 + 0.5) / 3, 0.25])


def _reference(episodes, rollouts, gamma, exclude_self):
    pool = {e.episode_id: e for e in [*episodes, *rollouts]}
    K = max(e.num_turns + int(e.truncated) for e in episodes)
    out = torch.zeros(len(episodes), K)
    for b, ep in enumerate(episodes):
        for k in range(ep.num_turns):
            prefix = [t.action_ids for t in ep.turns[:k]]
            vals = [
                return_to_go([t.reward for t in e.turns], gamma)[k]
                for e in pool.values()
                if e.group_id == ep.group_id and e.num_turns > k and [t.action_ids for t in e.turns[:k]] == prefix
                and not (exclude_self and e.episode_id == ep.episode_id)
            ]
            out[b, k] = sum(vals) / len(vals) if vals else return_to_go([t.reward for t in ep.turns], gamma)[k]
    return out


episode_st = st.tuples(
    st.sampled_from(["g", "h"]),
    st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0.0, 0.5, 1.0])), min_size=1, max_size=4),
    st.booleans(),
)


@given(st.lists(episode_st, min_size=1, max_size=8), st.sampled_from([1.0, 0.9]), st.booleans(), st.integers(0, 3))
def test_mc_values_match_brute_force(specs, gamma, exclude_self, n_main):
    eps = [_ep([a for a, _ in turns], [r for _, r in turns], group=g, truncated=tr) for g, turns, tr in specs]
    main, extra = eps[: max(1, n_main)], eps[max(1, n_main) :]
    got = mc_values(main, extra, gamma=gamma, exclude_self=exclude_self)
    assert torch.allclose(got, _reference(main, extra, gamma, exclude_self), atol=1e-5)
    if not exclude_self and not extra:
        for b, ep in enumerate(main):  # the root value is the group's mean return
            grp = [e for e in main if e.group_id == ep.group_id]
            assert float(got[b, 0]) == pytest.approx(sum(return_to_go([t.reward for t in e.turns], gamma)[0] for e in grp) / len(grp), abs=1e-5)


def test_mc_values_from_collector_branches_pack_with_batch():
    col = Collector(F.TorchBytePolicy(seed=5, eos_bias=1.0), "GuessNumber-v0", group_size=2, sampling=Sampling(max_new_tokens=12))
    eps = col.collect(2, seed=1)
    branches = col.branch_every_turn(eps, 2)
    values = mc_values(eps, branches)
    batch = CreditBatch.from_episodes(eps).with_values(values_BK=values)
    assert batch.values_BK.shape == (len(eps), batch.K)
    assert torch.allclose(values, _reference(eps, branches, 1.0, True))


def test_expert_episodes_and_sft_examples(tmp_path):
    eps = expert_episodes("GuessNumber-v0", 3, seed=0, group_size=2, store=str(tmp_path / "x.jsonl"))
    assert len(eps) == 6 and all(e.outcome["success"] == 1.0 for e in eps)
    assert len(load_episodes(tmp_path / "x.jsonl")) == 6
    ex = sft_examples(eps, min_outcome=1.0)
    assert len(ex) == 6
    ids, mask = ex[0]
    batch = CreditBatch.from_episodes(eps[:1])
    n = len(ids)
    assert batch.ids_BT[0, :n].tolist() == ids and batch.loss_mask_BT[0, :n].int().tolist() == mask
    assert sft_examples(eps, min_outcome=2.0) == []
