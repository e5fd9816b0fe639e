"""CreditBatch.from_token_tensors / to_token_tensors: an engine's token tensors <-> a CreditBatch."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym import CreditBatch, Episode, Turn
from creditgym.agents import Collector, ScriptedPolicy, tiny
from creditgym.credit import ESTIMATORS, compute
from creditgym.token_batch import turns_from_loss_mask

ENV_ID = "creditgym/SearchEasy-v0"


def engine_layout(episodes, left_pad, pad_id=0):
    """What an engine holds: each episode's tokens in one row, left-padded by `left_pad[b]` extra slots
    (then right-padded), loss mask on sampled tokens, turn k's reward on its last action token."""
    rows = []
    for ep in episodes:
        ids, loss, turn, reward = [], [], [], []
        for k, t in enumerate(ep.turns):
            ids += t.obs_ids + t.action_ids
            loss += [0] * len(t.obs_ids) + list(t.action_loss_mask)
            turn += [-1] * len(t.obs_ids) + [k] * len(t.action_ids)
            reward += [0.0] * (len(t.obs_ids) + len(t.action_ids) - 1) + [t.reward]
        n = len(ep.final_obs_ids)
        rows.append((ids + list(ep.final_obs_ids), loss + [0] * n, turn + [-1] * n, reward + [0.0] * n))
    T = max(len(r[0]) + p for r, p in zip(rows, left_pad))
    out = {k: torch.zeros(len(rows), T, dtype=d) for k, d in
           [("ids", torch.long), ("attn", torch.long), ("loss", torch.long), ("turn", torch.long), ("reward", torch.float32)]}
    out["ids"].fill_(pad_id), out["turn"].fill_(-1)
    for b, ((ids, loss, turn, reward), p) in enumerate(zip(rows, left_pad)):
        sl = slice(p, p + len(ids))
        out["ids"][b, sl], out["attn"][b, sl], out["loss"][b, sl] = torch.tensor(ids), 1, torch.tensor(loss)
        out["turn"][b, sl], out["reward"][b, sl] = torch.tensor(turn), torch.tensor(reward)
    return out


def left_padded(x_BT, left_pad, T):
    out = torch.zeros(x_BT.shape[0], T + x_BT.shape[1], dtype=x_BT.dtype)
    for b, p in enumerate(left_pad):
        out[b, p : p + x_BT.shape[1]] = x_BT[b]
    return out[:, :T]


@pytest.fixture(scope="module")
def expert_episodes():
    tok = tiny.build(seed=0).tokenizer
    policy = ScriptedPolicy.for_env(ENV_ID, tokenizer=tok, epsilon=0.5)
    return Collector(policy, ENV_ID, group_size=4).collect(num_groups=3, seed=0)


def extras(batch):
    """Values, probes and greedy returns for the estimators that need them, shared by both packings."""
    g = torch.Generator().manual_seed(0)
    return dict(
        values_BK=torch.rand(batch.B, batch.K, generator=g),
        probe_BK1=torch.rand(batch.B, batch.K + 1, generator=g),
        greedy_return_B=torch.rand(batch.B, generator=g),
        token_values_BT=torch.rand(batch.B, batch.T, generator=g),
    )


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("given_turns", [False, True])
def test_round_trip_matches_from_episodes_for_every_estimator(expert_episodes, name, given_turns):
    eps = expert_episodes
    ref = CreditBatch.from_episodes(eps)
    assert len(set(ref.outcome_B.tolist())) > 1, "the imperfect expert should give varied returns"
    ex = extras(ref)
    ref = dataclasses.replace(ref, **ex)
    left_pad = [(3 * b) % 5 for b in range(len(eps))]
    eng = engine_layout(eps, left_pad)
    T_eng = eng["loss"].shape[1]
    tb = CreditBatch.from_token_tensors(
        eng["loss"], [ep.group_id for ep in eps], rewards_BT=eng["reward"], ids_BT=eng["ids"],
        attention_mask_BT=eng["attn"], token_turn_BT=eng["turn"] if given_turns else None,
        truncated_B=torch.tensor([ep.truncated for ep in eps]),
        state_keys=[[t.state_key for t in ep.turns] for ep in eps], abstract_BK1=ref.abstract_BK1,
        **{**ex, "token_values_BT": left_padded(ex["token_values_BT"], left_pad, T_eng)},
    )
    for f in ("rewards_BK", "turn_mask_BK", "outcome_B", "group_B", "state_BK", "node_BK", "token_turn_BT",
              "loss_mask_BT", "ids_BT", "attention_mask_BT", "terminated_B", "truncated_B"):
        assert torch.equal(getattr(tb, f), getattr(ref, f)), f
    a_ref, a_tok = compute(name, ref), compute(name, tb)
    torch.testing.assert_close(a_tok.turn_BK, a_ref.turn_BK, rtol=0, atol=0)
    torch.testing.assert_close(a_tok.token_BT, a_ref.token_BT, rtol=0, atol=0)
    back = tb.to_token_tensors(a_tok.token_BT)
    torch.testing.assert_close(back, left_padded(a_ref.token_BT, left_pad, T_eng), rtol=0, atol=0)


def test_hand_computed_left_padded_multi_turn_and_prompt_only_rows():
    # row 0: 2 pads | prompt 7 | action 1 1 | obs 8 8 | action 2 (reward 1 on it)
    # row 1: prompt 7 | action 3 (reward 0) | right pad
    # row 2: prompt only (no sampled tokens): zero turns, outcome 0, no advantage anywhere
    attn = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 1, 1]])
    loss = torch.tensor([[0, 0, 0, 1, 1, 0, 0, 1], [0, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]])
    rew = torch.zeros(3, 8)
    rew[0, 7] = 1.0
    b = CreditBatch.from_token_tensors(loss, ["g", "g", "g"], rewards_BT=rew, attention_mask_BT=attn)
    assert (b.B, b.K, b.T) == (3, 2, 6)
    assert b.token_turn_BT.tolist() == [[-1, 0, 0, -1, -1, 1], [-1, 0, -1, -1, -1, -1], [-1] * 6]
    assert b.rewards_BK.tolist() == [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    assert b.turn_mask_BK.tolist() == [[True, True], [True, False], [False, False]]
    assert b.outcome_B.tolist() == [1.0, 0.0, 0.0]
    # a prompt-only row has no action, so (like a zero-turn Episode) it is outside its group's baseline:
    # outcomes (1, 0): mean 0.5, unbiased std 0.70711
    adv = compute("grpo", b)
    z0, z1 = 0.5 / (0.7071068 + 1e-6), -0.5 / (0.7071068 + 1e-6)
    torch.testing.assert_close(adv.turn_BK, torch.tensor([[z0, z0], [z1, 0.0], [0.0, 0.0]]), rtol=1e-4, atol=1e-5)
    expected = torch.tensor([[0, 0, 0, z0, z0, 0, 0, z0], [0, z1, 0, 0, 0, 0, 0, 0], [0.0] * 8])
    torch.testing.assert_close(b.to_token_tensors(adv.token_BT), expected, rtol=1e-4, atol=1e-5)
    eps = [Episode(turns=(Turn(obs_ids=(7,), action_ids=(1, 1)), Turn(obs_ids=(8, 8), action_ids=(2,), reward=1.0))),
           Episode(turns=(Turn(obs_ids=(7,), action_ids=(3,)),)), Episode(final_obs_ids=(7, 7, 7))]
    torch.testing.assert_close(compute("grpo", CreditBatch.from_episodes(eps)).turn_BK, adv.turn_BK, rtol=0, atol=0)
    only_prompts = CreditBatch.from_token_tensors(loss[2:], ["g"], rewards_BT=rew[2:], ids_BT=attn[2:], attention_mask_BT=attn[2:])
    assert only_prompts.K == 1 and not only_prompts.turn_mask_BK.any()


def test_turn_rewards_and_masked_observation_tokens_inside_a_turn():
    # one turn whose sampled text holds a masked span (a self-written search result): give token_turn_BT
    loss = torch.tensor([[0, 1, 0, 0, 1]])
    turn = torch.tensor([[-1, 0, 0, 0, 0]])
    b = CreditBatch.from_token_tensors(loss, [0], rewards_BK=torch.tensor([[2.0]]), token_turn_BT=turn)
    assert b.K == 1 and b.rewards_BK.tolist() == [[2.0]]
    derived = CreditBatch.from_token_tensors(loss, [0], rewards_BK=torch.tensor([[2.0, 0.0]]))
    assert derived.K == 2  # without token_turn_BT each run of the loss mask is its own turn


def test_errors_say_what_to_do():
    loss = torch.tensor([[0, 1]])
    with pytest.raises(ValueError, match="exactly one of rewards_BT"):
        CreditBatch.from_token_tensors(loss, [0])
    with pytest.raises(ValueError, match="contiguous"):
        CreditBatch.from_token_tensors(torch.tensor([[1, 0, 0]]), [0], rewards_BK=torch.zeros(1, 1),
                                       attention_mask_BT=torch.tensor([[1, 0, 1]]))
    with pytest.raises(ValueError, match="padding slot"):
        CreditBatch.from_token_tensors(loss, [0], rewards_BK=torch.zeros(1, 1), attention_mask_BT=torch.tensor([[1, 0]]))
    with pytest.raises(ValueError, match="in token order"):
        CreditBatch.from_token_tensors(torch.tensor([[1, 1]]), [0], rewards_BK=torch.zeros(1, 2), ids_BT=torch.tensor([[5, 6]]),
                                       token_turn_BT=torch.tensor([[1, 0]]))
    with pytest.raises(ValueError, match="before the row's first action"):
        CreditBatch.from_token_tensors(loss, [0], rewards_BT=torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="from_token_tensors"):
        CreditBatch.from_episodes([Episode(turns=(Turn(action_ids=(1,)),))]).to_token_tensors(torch.zeros(1, 1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1), min_size=1, max_size=12), min_size=1, max_size=5),
       st.lists(st.integers(0, 4), min_size=5, max_size=5))
def test_turn_boundaries_are_the_runs_of_the_loss_mask(masks, pads):
    T = max(len(m) for m in masks) + 4
    loss = torch.zeros(len(masks), T, dtype=torch.long)
    attn = torch.zeros(len(masks), T, dtype=torch.long)
    runs = []
    for b, m in enumerate(masks):
        p = pads[b]
        loss[b, p : p + len(m)], attn[b, p : p + len(m)] = torch.tensor(m), 1
        starts = [t for t in range(len(m)) if m[t] and (t == 0 or not m[t - 1])]
        runs.append(starts)
    b = CreditBatch.from_token_tensors(loss, list(range(len(masks))), rewards_BK=torch.zeros(len(masks), T),
                                       attention_mask_BT=attn)
    assert b.turn_mask_BK.sum(1).tolist() == [len(r) for r in runs]
    for i, starts in enumerate(runs):
        tt = b.token_turn_BT[i]
        # turn k begins exactly at the k-th run start (left padding removed); every sampled token has a turn
        assert [int((tt == k).nonzero()[0]) for k in range(len(starts))] == starts
        assert torch.equal(b.loss_mask_BT[i], tt >= 0)
    assert torch.equal(turns_from_loss_mask(loss)[loss.bool()] >= 0, torch.ones(int(loss.sum()), dtype=torch.bool))
    assert torch.equal(b.to_token_tensors(b.loss_mask_BT.long()), loss)
