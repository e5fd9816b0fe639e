"""Prefilled generation (`Collector(prefill=...)`, METHODS.md section 8): the prefill's tokens are fed
to the generator and recorded exactly in `action_ids`, carry no sampling logprob, and are masked out
of the RL loss (SFT on self-generated plans unmasks them)."""

from __future__ import annotations

import creditgym_test_rollout_fakes as F  # loaded by tests/agents/conftest.py
import pytest
import torch

from creditgym import CreditBatch
from creditgym.agents import Collector, Sampling
from creditgym.envs.redteam import REDTEAM

OPEN_LOOP = {"mode": "open_loop", "reward_scheme": "ida", "goal_types": ("canary",), "victim_level": 1, "max_turns": 3}


@pytest.fixture(scope="module")
def policy():
    tiny = pytest.importorskip("creditgym.agents.tiny")
    torch.set_num_threads(1)
    return tiny.build(seed=0)


@pytest.fixture(scope="module")
def collected(policy):
    rec = F.Recording(policy)
    col = Collector(rec, REDTEAM, group_size=3, env_kwargs=OPEN_LOOP, prefill="1. ",
                    sampling=Sampling(max_new_tokens=24))
    return rec, col, col.collect(2, seed=3)


def test_prefill_tokens_fed_to_generator_and_recorded_exactly(policy, collected):
    rec, _, eps = collected
    pre = policy.tokenizer.encode("1. ", add_special_tokens=False)
    assert pre  # a non-empty prefix
    contexts = {tuple(c[0]) for c in rec.calls}
    for ep in eps:
        t = ep.turns[0]
        assert list(t.action_ids[: len(pre)]) == pre
        assert t.action_text.startswith("1. ")
        assert t.info["prefill_tokens"] == len(pre)
        # the generator saw the observation tokens followed by the prefill tokens
        assert tuple(t.obs_ids) + tuple(pre) in contexts
        # the whole action decodes to the text the env was sent
        assert policy.tokenizer.decode(list(t.action_ids), skip_special_tokens=True) == t.action_text
        # no sampling logprob, no RL loss on the prefill; the sampled tokens keep theirs
        assert t.action_logprobs[: len(pre)] == (0.0,) * len(pre)
        assert t.action_loss_mask == (0,) * len(pre) + (1,) * (len(t.action_ids) - len(pre))


def test_prefill_masked_from_rl_loss_and_logprobs_match(policy, collected):
    _, _, eps = collected
    batch = CreditBatch.from_episodes(eps)
    n = eps[0].turns[0].info["prefill_tokens"]
    for b, ep in enumerate(eps):
        for k in range(ep.num_turns):
            cols = (batch.token_turn_BT[b] == k).nonzero().flatten()
            assert not batch.loss_mask_BT[b, cols[:n]].any()
            assert batch.loss_mask_BT[b, cols[n:]].all()
    # the sampled tokens' recorded logprobs are the teacher-forced ones given the prefill
    lp_BT = policy.logprobs(batch.ids_BT, batch.attention_mask_BT)
    sampled = batch.loss_mask_BT
    assert float((lp_BT - batch.logprobs_BT)[sampled].abs().max()) < 1e-4


def test_prefill_is_trained_by_sft_view(collected):
    from creditgym.trainers.sema import train_on_prefill

    _, _, eps = collected
    sft = train_on_prefill(eps)
    for ep, s in zip(eps, sft):
        assert s.turns[0].action_ids == ep.turns[0].action_ids
        assert s.turns[0].action_loss_mask == (1,) * len(ep.turns[0].action_ids)
    assert CreditBatch.from_episodes(sft).loss_mask_BT.sum() > CreditBatch.from_episodes(eps).loss_mask_BT.sum()


def test_prefill_too_long_for_the_token_cap_says_what_to_do(policy):
    col = Collector(policy, REDTEAM, env_kwargs=OPEN_LOOP, prefill="1. " * 10, sampling=Sampling(max_new_tokens=4))
    with pytest.raises(ValueError, match="raise max_new_tokens"):
        col.collect(1, seed=0)


def test_no_prefill_leaves_turns_unchanged(policy):
    col = Collector(policy, REDTEAM, env_kwargs=OPEN_LOOP, sampling=Sampling(max_new_tokens=8))
    ep = col.collect(1, seed=0)[0]
    assert "prefill_tokens" not in ep.turns[0].info and set(ep.turns[0].action_loss_mask) == {1}
