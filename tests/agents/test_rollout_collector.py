"""Collector core: groups, exact token bookkeeping, observation roles, stop strings, truncation."""

from __future__ import annotations

import creditgym_test_rollout_fakes as F  # loaded by tests/agents/conftest.py
import pytest
import torch

from creditgym import CreditBatch, TaskSpec
from creditgym.agents import Collector, RandomPolicy, Sampling, ScriptedPolicy
from creditgym.store import RolloutStore

GUESS = "GuessNumber-v0"


def assert_exact_accounting(episodes, recording):
    """Each turn's context equals the episode's tokens so far; action ids are what was sampled; the
    packed ids_BT row is the whole conversation; observation tokens get loss_mask 0."""
    by_ctx = {}
    for ids, gen, _, _ in recording.calls:
        by_ctx.setdefault(tuple(ids), []).append(gen)
    for ep in episodes:
        so_far = []
        for t in ep.turns:
            so_far += t.obs_ids
            gens = by_ctx.get(tuple(so_far))
            assert gens, "the policy never saw this context"
            assert any(tuple(g.token_ids) == t.action_ids and tuple(g.logprobs) == t.action_logprobs for g in gens)
            so_far += t.action_ids
    batch = CreditBatch.from_episodes(episodes)
    for b, ep in enumerate(episodes):
        row = []
        for t in ep.turns:
            row += [*t.obs_ids, *t.action_ids]
        row += ep.final_obs_ids
        n = int(batch.attention_mask_BT[b].sum())
        assert batch.ids_BT[b, :n].tolist() == row
        obs_pos = batch.token_turn_BT[b, :n] < 0
        assert not batch.loss_mask_BT[b, :n][obs_pos].any()
        assert int((batch.token_turn_BT[b] >= 0).sum()) == sum(len(t.action_ids) for t in ep.turns)
    return batch


@pytest.mark.parametrize("make_policy", [lambda: RandomPolicy.for_env(GUESS), lambda: F.TorchBytePolicy(seed=1)])
def test_groups_share_task_and_seed_and_exact_tokens(make_policy):
    rec = F.Recording(make_policy())
    col = Collector(rec, GUESS, group_size=3, sampling=Sampling(max_new_tokens=24))
    eps = col.collect(num_groups=2, seed=5)
    assert len(eps) == 6
    for g in range(2):
        grp = eps[3 * g : 3 * g + 3]
        assert len({e.group_id for e in grp}) == 1
        assert len({e.task_id for e in grp}) == 1 and len({e.seed for e in grp}) == 1
        assert grp[0].turns[0].obs_ids == grp[1].turns[0].obs_ids  # same first observation
    assert eps[0].group_id != eps[3].group_id
    for e in eps:
        assert e.terminated != e.truncated
        assert e.outcome["return"] == pytest.approx(e.total_reward)
        assert e.meta["options"] == {} and e.role == "agent"
        assert all(t.info["gen_s"] >= 0 and t.info["env_s"] >= 0 for t in e.turns)
        assert e.turns[0].state_key and e.final_obs_text == (e.final_obs_text or "")
    assert_exact_accounting(eps, rec)
    again = col.collect(num_groups=2, seed=5)
    assert {e.group_id for e in again}.isdisjoint({e.group_id for e in eps})  # run-unique group ids
    assert [e.task_id for e in again] == [e.task_id for e in eps]


def test_first_turn_is_the_full_prompt_and_later_obs_are_template_deltas():
    pol = ScriptedPolicy.for_env(GUESS)
    tok = pol.tokenizer
    ep = Collector(pol, GUESS).collect(1, seed=0)[0]
    first = ep.turns[0]
    assert list(first.obs_ids) == tok.apply_chat_template([{"role": "user", "content": first.obs_text}], add_generation_prompt=True)
    if ep.num_turns > 1:
        second = ep.turns[1]
        # scripted action ends with <|eos|>, not the template's <|im_end|>: the closing tokens are observation tokens
        expected = [tok.im_end_id, *tok.encode("\n"), tok.im_start_id, *tok.encode(f"user\n{second.obs_text}"), tok.im_end_id,
                    *tok.encode("\n"), tok.im_start_id, *tok.encode("assistant\n")]
        assert list(second.obs_ids) == expected
    assert ep.final_obs_text in ("Correct!",) or ep.truncated
    assert tok.decode(ep.final_obs_ids).startswith("<|im_end|>\n<|im_start|>user\n")


def test_scripted_expert_solves_and_batch_packs():
    eps = Collector(ScriptedPolicy.for_env(GUESS), GUESS, group_size=2).collect(3, seed=1)
    assert all(e.outcome["success"] == 1.0 and e.terminated for e in eps)
    batch = CreditBatch.from_episodes(eps)
    assert batch.B == 6 and bool(batch.terminated_B.all())


def test_tasks_pick_task_id_and_merge_env_kwargs():
    tasks = [TaskSpec("easy", {"high": 8}, task_id="guess/train/8-3"), TaskSpec("hard", {"high": 64})]
    col = Collector(ScriptedPolicy.for_env(GUESS), GUESS, group_size=2, env_kwargs={"max_turns": 7})
    eps = col.collect(2, seed=0, tasks=tasks)
    assert eps[0].task_id == "guess/train/8-3" and eps[0].meta["options"] == {"task_id": "guess/train/8-3"}
    assert "1 to 8" in eps[0].turns[0].obs_text and "7 guesses" in eps[0].turns[0].obs_text
    assert "1 to 64" in eps[2].turns[0].obs_text
    assert eps[0].meta["category"] == "easy" and eps[2].meta["env_kwargs"] == {"high": 64}
    with pytest.raises(ValueError, match="one TaskSpec per group"):
        col.collect(3, seed=0, tasks=tasks)


def test_continuation_role_appends_raw_text_and_merges_stop():
    rec = F.Recording(RandomPolicy.for_env("test/ContinuationGuess-v0"))
    col = Collector(rec, "test/ContinuationGuess-v0", sampling=Sampling(stop=("STOP",)))
    ep = col.collect(1, seed=3)[0]
    assert set(rec.calls[0][2].stop) == {"STOP", "</guess>"}
    tok = rec.tokenizer
    for t in ep.turns[1:]:
        assert list(t.obs_ids) == tok.encode(t.obs_text)  # raw, no template tokens
        assert t.obs_text.startswith("\n<information>")
    # stop-string actions carry no eos: the whole episode is one running assistant message
    assert ep.num_turns >= 2
    assert rec.calls[-1][3].messages[-1]["role"] == "assistant"
    assert [m["role"] for m in rec.calls[-1][3].messages] == ["user", "assistant"]
    assert_exact_accounting([ep], rec)


def test_tool_role_one_tool_message_per_call():
    rec = F.Recording(RandomPolicy.for_env("test/ToolGuess-v0"))
    ep = Collector(rec, "test/ToolGuess-v0").collect(1, seed=3)[0]
    assert ep.num_turns >= 2
    text = rec.tokenizer.decode(ep.turns[1].obs_ids)
    assert text.count("<|im_start|>tool\n") == 1 and '"result": ' in text
    assert ep.turns[1].obs_text not in text  # tool messages carry the results, not the env text
    assert_exact_accounting([ep], rec)


class NoToolTokenizer(F.ByteTokenizer):
    def apply_chat_template(self, messages, **kw):
        if any(m["role"] == "tool" for m in messages):
            raise ValueError("this template has no tool role")
        return super().apply_chat_template(messages, **kw)


def test_tool_role_falls_back_to_user_without_tool_template():
    pol = RandomPolicy.for_env("test/ToolGuess-v0", tokenizer=NoToolTokenizer())
    ep = Collector(pol, "test/ToolGuess-v0").collect(1, seed=3)[0]
    text = pol.tokenizer.decode(ep.turns[1].obs_ids)
    assert "<|im_start|>user\n" + ep.turns[1].obs_text in text


def test_mask_spans_zero_the_tokens_of_the_span():
    pol = ScriptedPolicy.for_env("test/MaskGuess-v0")
    ep = Collector(pol, "test/MaskGuess-v0").collect(1, seed=2)[0]
    for t in ep.turns:
        text = pol.tokenizer.decode(t.action_ids)
        i, j = text.index(">") + 1, text.index("</")
        assert t.action_loss_mask == tuple(0 if i <= p < j else 1 for p in range(len(t.action_ids)))
    batch = CreditBatch.from_episodes([ep])
    assert int(batch.loss_mask_BT.sum()) < int((batch.token_turn_BT >= 0).sum())


def test_context_limit_truncates_with_collector_outcome():
    pol = RandomPolicy.for_env(GUESS)
    eps = Collector(pol, GUESS, max_context_tokens=140, group_size=2).collect(1, seed=0)
    for e in eps:
        assert e.truncated and not e.terminated
        assert e.outcome == {"success": 0.0, "return": e.total_reward, "collector_truncated": 1.0}
        assert sum(len(t.obs_ids) + len(t.action_ids) for t in e.turns) + len(e.final_obs_ids) >= 140
        assert e.final_obs_ids and e.final_obs_text
    CreditBatch.from_episodes(eps)


def test_context_limit_caps_new_tokens():
    rec = F.Recording(F.TorchBytePolicy(seed=0, eos_bias=-20.0))  # never stops on its own
    eps = Collector(rec, GUESS, max_context_tokens=120, sampling=Sampling(max_new_tokens=64)).collect(1, seed=0)
    assert all(len(c[0]) + len(c[1].token_ids) <= 120 for c in rec.calls)
    assert eps[0].truncated


def test_greedy_baseline_not_returned_and_in_meta():
    pol = F.TorchBytePolicy(seed=2)
    col = Collector(pol, GUESS, group_size=2, greedy_baseline=True, sampling=Sampling(max_new_tokens=16))
    eps = col.collect(2, seed=0)
    assert len(eps) == 4
    greedy = Collector(pol, GUESS, group_size=1, sampling=Sampling(max_new_tokens=16, temperature=0.0)).collect(2, seed=0)
    for g in range(2):
        assert eps[2 * g].meta["greedy_return"] == eps[2 * g + 1].meta["greedy_return"] == greedy[g].total_reward
    assert CreditBatch.from_episodes(eps).greedy_return_B is not None


def test_store_streams_episodes(tmp_path):
    store = RolloutStore(tmp_path / "eps.jsonl")
    eps = Collector(ScriptedPolicy.for_env(GUESS), GUESS, group_size=2, store=store).collect(2, seed=0)
    back = store.read()
    assert [e.to_dict() for e in back] == [e.to_dict() for e in eps]


class HintAware:
    """Scripted guesses, and a fixed document when asked as a responder."""

    def __init__(self):
        self.inner = ScriptedPolicy.for_env("test/ResponderGuess-v0")
        self.tokenizer = self.inner.tokenizer

    def generate(self, contexts, sampling):
        out = self.inner.generate([c for c in contexts if not c.obs_texts[0].startswith("hint")], sampling)[::-1]
        return [F.Generation((65,), (0.0,), "doc") if c.obs_texts[0].startswith("hint") else out.pop() for c in contexts]


def test_responder_and_set_env_attr():
    rec = F.Recording(HintAware())
    col = Collector(rec, "test/ResponderGuess-v0", group_size=2)
    col.set_env_attr("training_step", 3)
    eps = col.collect(1, seed=0)
    assert all(t.obs_text.endswith("hint=3 step=3") for e in eps for t in e.turns[1:])
    assert eps[0].final_obs_text.endswith("hint=3 step=3")
    responder_calls = [c for c in rec.calls if c[3].obs_texts[0].startswith("hint for")]
    assert responder_calls and all(c[2].temperature == 1.0 and c[2].max_new_tokens == 256 for c in responder_calls)
    col.set_env_attr("training_step", 9)
    assert "step=9" in col.collect(1, seed=0)[0].final_obs_text
    other = F.Recording(F.TorchBytePolicy(seed=0))
    eps = Collector(ScriptedPolicy.for_env("test/ResponderGuess-v0"), "test/ResponderGuess-v0", responder_policy=other).collect(1, seed=0)
    assert len(other.calls) == eps[0].num_turns


def test_env_fns_and_max_concurrent():
    fns = [lambda: F.GuessNumberEnv(high=16)] * 2
    rec = F.Recording(ScriptedPolicy.for_env(GUESS))
    col = Collector(rec, env_fns=fns, group_size=3)
    eps = col.collect(2, seed=0)
    assert len(eps) == 6 and all("1 to 16" in e.turns[0].obs_text for e in eps)
    assert len(col.pool.envs) == 2
    assert len(Collector(rec, fns, group_size=2).collect(1, seed=0)) == 2  # env_fns in env_id's place
    col = Collector(ScriptedPolicy.for_env(GUESS), GUESS, group_size=2, max_concurrent=1)
    assert len(col.collect(2, seed=0)) == 4 and len(col.pool.envs) == 1


def test_two_player_episode_per_role():
    pols = {"attacker": F.Recording(F.TorchBytePolicy(seed=3)), "defender": F.Recording(F.TorchBytePolicy(seed=4))}
    col = Collector(policies=pols, env_id="test/Duel-v0", group_size=2, sampling=Sampling(max_new_tokens=8))
    eps = col.collect(2, seed=0)
    assert len(eps) == 8
    for a, d in zip(eps[0::2], eps[1::2]):
        assert (a.role, d.role) == ("attacker", "defender")
        assert a.group_id == d.group_id and a.task_id == d.task_id and a.meta["match_id"] == d.meta["match_id"]
        assert a.turns[-1].reward in (1.1, -0.9) and a.total_reward == pytest.approx(-d.total_reward + 0.1 * (a.num_turns + d.num_turns))
        assert a.outcome["success"] + d.outcome["success"] == 1.0
        # the defender's observation shows the attacker's action
        assert a.turns[0].action_text[:20] in d.turns[0].obs_text or repr(a.turns[0].action_text[:20]) in d.turns[0].obs_text
    for role, rec in pols.items():
        assert all(c[3].role == role for c in rec.calls)
        assert_exact_accounting([e for e in eps if e.role == role], rec)
    batch = CreditBatch.from_episodes(eps)
    assert len(set(batch.group_B.tolist())) == 4


def test_progress_bar_switch_and_empty_tokens_error():
    col = Collector(ScriptedPolicy.for_env(GUESS), GUESS, progress=True)
    assert len(col.collect(1, seed=0)) == 1

    class Empty:
        tokenizer = F.ByteTokenizer()

        def generate(self, contexts, sampling):
            return [F.Generation((), (), "") for _ in contexts]

    with pytest.raises(ValueError, match="at least one"):
        Collector(Empty(), GUESS).collect(1, seed=0)


def test_deterministic_given_seed():
    a = Collector(F.TorchBytePolicy(seed=0), GUESS, group_size=2, sampling=Sampling(max_new_tokens=12)).collect(2, seed=7)
    b = Collector(F.TorchBytePolicy(seed=0), GUESS, group_size=2, sampling=Sampling(max_new_tokens=12)).collect(2, seed=7)
    assert [[t.action_ids for t in e.turns] for e in a] == [[t.action_ids for t in e.turns] for e in b]
    assert torch.equal(CreditBatch.from_episodes(a).ids_BT, CreditBatch.from_episodes(b).ids_BT)


def test_episodes_come_back_in_group_order_and_system_prompt():
    # group 0 needs many guesses (high=1000), group 1 one guess (high=1): group 1 finishes first
    tasks = [TaskSpec("slow", {"high": 1000}), TaskSpec("fast", {"high": 1})]
    rec = F.Recording(ScriptedPolicy.for_env(GUESS))
    eps = Collector(rec, GUESS, system_prompt="Be brief.").collect(2, seed=0, tasks=tasks)
    assert eps[0].num_turns > eps[1].num_turns == 1
    assert [e.group_id.rsplit("-", 1)[1] for e in eps] == ["g0", "g1"]
    msgs = rec.calls[0][3].messages
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert rec.tokenizer.decode(eps[0].turns[0].obs_ids).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    roles = [m["role"] for m in rec.calls[-1][3].messages]
    assert roles[:2] == ["system", "user"] and roles[2::2] == ["assistant"] * len(roles[2::2])


def test_state_dict_resumes_the_sampling_seeds():
    """The Collector's public state (call and generation counters) is what a trainer checkpoints: a
    fresh Collector that loads it samples what the original samples next; one that does not, differs."""
    def make():
        return Collector(F.TorchBytePolicy(seed=1), GUESS, group_size=2, sampling=Sampling(max_new_tokens=24))

    first = make()
    first.collect(num_groups=2, seed=5)
    state = first.state_dict()
    assert state["calls"] == 1 and state["gen_calls"] > 0
    resumed, fresh = make(), make()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    actions = [[[t.action_ids for t in e.turns] for e in c.collect(num_groups=2, seed=5)] for c in (first, resumed, fresh)]
    assert actions[0] == actions[1] and actions[0] != actions[2]
