"""History policies (full / window / a function), the context budget, and the Collector's handling of
backend failures and non-finite rewards (issues 16 item 3 and 17)."""

from __future__ import annotations

import logging
import math
import types

import creditgym_test_rollout_fakes as F  # loaded by tests/agents/conftest.py
import pytest

from creditgym import CreditBatch
from creditgym.agents import Collector, GoldAnswerProbe, RandomPolicy, Sampling, ScriptedPolicy
from creditgym.agents.rollout_chat import render_ids
from creditgym.agents.rollout_history import (
    DEFAULT_MAX_CONTEXT_TOKENS,
    HistoryPolicy,
    parse_history,
    policy_context_length,
    resolve_max_context,
    window_messages,
)
from creditgym.store import RolloutStore

GUESS = "GuessNumber-v0"
WGUESS = "test/WindowGuess-v0"


# ---------------------------------------------------------------------- parsing and the window


def test_parse_history_forms():
    assert parse_history("full") == HistoryPolicy()
    assert parse_history("window") == HistoryPolicy("window", 1)
    assert parse_history("window:3") == HistoryPolicy("window", 3)
    assert parse_history({"mode": "window", "k": 0}) == HistoryPolicy("window", 0)
    fn = lambda obs, acts: [{"role": "user", "content": obs[-1]}]
    assert parse_history(fn).mode == "custom" and parse_history(fn).per_turn
    assert not parse_history("full").per_turn and parse_history("window:2").describe() == "window:2"
    for bad in ("windows", "window:-1", "window:x", {"mode": "window", "n": 1}, 3):
        with pytest.raises(ValueError, match="history"):
            parse_history(bad)


def test_window_messages_hand_example():
    obs, acts = ["Goal: G", "screen 1", "screen 2", "screen 3"], ["a1", "a2", "a3"]
    assert window_messages(obs[:1], [], 1) == [{"role": "user", "content": "Goal: G"}]
    (msg,) = window_messages(obs, acts, 2)
    assert msg["role"] == "user"
    assert msg["content"] == (
        "Goal: G\n\n[Steps taken so far: 3. The last 2, oldest first:]\nStep 2: a2\nStep 3: a3\n\n"
        "[Current observation:]\nscreen 3"
    )
    (msg0,) = window_messages(obs, acts, 0)
    assert "a3" not in msg0["content"] and msg0["content"].endswith("screen 3")
    assert "Step 1: a1" in window_messages(obs, acts, 10)[0]["content"]  # k beyond the history shows all


def test_context_length_from_policy():
    assert policy_context_length(types.SimpleNamespace(max_context=1000)) == 1000
    hf_like = types.SimpleNamespace(model=types.SimpleNamespace(config=types.SimpleNamespace(max_position_embeddings=8192)))
    assert policy_context_length(hf_like) == 8192
    assert policy_context_length(F.TorchBytePolicy()) is None
    assert resolve_max_context(None, [hf_like, types.SimpleNamespace(max_context=1000)]) == 1000
    assert resolve_max_context(None, [F.TorchBytePolicy()]) == DEFAULT_MAX_CONTEXT_TOKENS
    assert resolve_max_context(77, [hf_like]) == 77
    assert Collector(hf_like, GUESS).max_context_tokens == 8192
    assert Collector(RandomPolicy.for_env(GUESS), GUESS).max_context_tokens == DEFAULT_MAX_CONTEXT_TOKENS


def test_trainer_and_evaluate_share_the_collector_default():
    import inspect

    from creditgym.trainers.evaluate import evaluate
    from creditgym.trainers.grpo import RLConfig

    assert RLConfig().max_context_tokens is None
    assert inspect.signature(evaluate).parameters["max_context_tokens"].default is None
    assert inspect.signature(Collector).parameters["max_context_tokens"].default is None


# ---------------------------------------------------------------------- window mode in the Collector


def test_window_each_turn_is_its_own_exact_prompt():
    rec = F.Recording(F.TorchBytePolicy(seed=2, eos_bias=1.0))
    col = Collector(rec, GUESS, group_size=2, history="window:1", sampling=Sampling(max_new_tokens=12))
    eps = col.collect(num_groups=2, seed=3)
    by_ctx = {}
    for ids, gen, _, ctx in rec.calls:
        by_ctx.setdefault(tuple(ids), []).append((gen, ctx))
    tok = rec.tokenizer
    for ep in eps:
        assert ep.history == "window:1" and ep.per_turn_rows
        for k, t in enumerate(ep.turns):
            seen = by_ctx[tuple(t.obs_ids)]  # the prompt is the whole context the policy got
            gen, ctx = next((g, c) for g, c in seen if tuple(g.token_ids) == t.action_ids)
            assert tuple(gen.logprobs) == t.action_logprobs
            obs_texts = [u.obs_text for u in ep.turns[: k + 1]]
            acts = [u.action_text for u in ep.turns[:k]]
            want = window_messages(obs_texts, acts, 1)
            assert ctx.messages == want
            assert list(t.obs_ids) == render_ids(tok, want, True)
            # scripted policies keep reading the raw history
            assert ctx.obs_texts == obs_texts and ctx.action_texts == acts
    batch = CreditBatch.from_episodes(eps)
    assert batch.R == sum(ep.num_turns for ep in eps)


def test_history_function_and_system_prompt():
    def last_only(obs_texts, action_texts):
        return [{"role": "user", "content": f"turn {len(action_texts)}: {obs_texts[-1]}"}]

    rec = F.Recording(RandomPolicy.for_env(GUESS))
    eps = Collector(rec, GUESS, history=last_only, system_prompt="be brief").collect(1, seed=0)
    assert eps[0].history == "custom"
    for (_, _, _, ctx), t in zip(rec.calls, eps[0].turns):
        assert ctx.messages[0] == {"role": "system", "content": "be brief"}
        assert ctx.messages[1]["content"].startswith(f"turn {len(ctx.action_texts)}: ")
        assert ctx.ids == list(t.obs_ids)
    with pytest.raises(TypeError, match="list of chat messages"):
        Collector(rec, GUESS, history=lambda o, a: "not messages").collect(1, seed=0)


def test_env_metadata_default_and_override():
    eps = Collector(ScriptedPolicy.for_env(GUESS), WGUESS).collect(1, seed=0)
    assert eps[0].history == "window:1"
    eps = Collector(ScriptedPolicy.for_env(GUESS), WGUESS, history="full").collect(1, seed=0)
    assert eps[0].history == "full" and not eps[0].per_turn_rows


def test_device_defaults_to_window():
    import gymnasium

    env = gymnasium.make("creditgym/Device-v0")
    assert parse_history(env.unwrapped.metadata["history"]) == HistoryPolicy("window", 1)
    env.close()


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_device_expert_succeeds_through_the_collector(difficulty):
    """Issue 16: the full history outgrew the budget (0% success); the window keeps every prompt short."""
    col = Collector(ScriptedPolicy.for_env("creditgym/Device-v0"), "creditgym/Device-v0", env_kwargs={"difficulty": difficulty})
    eps = col.collect(num_groups=12, seed=difficulty)
    success = sum(e.outcome.get("success", 0.0) for e in eps) / len(eps)
    assert success >= 0.9, success
    assert col.stats["collector_truncated_frac"] == 0.0
    assert max(len(t.obs_ids) + len(t.action_ids) for e in eps for t in e.turns) < col.max_context_tokens


def test_window_prompt_that_cannot_fit_raises_with_the_fix():
    col = Collector(ScriptedPolicy.for_env(GUESS), WGUESS, env_kwargs={"pad": 300}, max_context_tokens=200)
    with pytest.raises(ValueError, match=r"max-context-tokens.*window:0"):
        col.collect(1, seed=0)


def test_full_history_truncation_warns_and_reports(caplog):
    col = Collector(ScriptedPolicy.for_env(GUESS), WGUESS, env_kwargs={"pad": 60}, history="full", max_context_tokens=400)
    with caplog.at_level(logging.WARNING):
        eps = col.collect(4, seed=0)
    cut = [e for e in eps if e.outcome.get("collector_truncated")]
    assert cut and all(e.truncated and e.outcome["success"] == 0.0 for e in cut)
    assert col.stats["collector_truncated_frac"] == len(cut) / len(eps)
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "collector_truncated" in msg and "--history window" in msg and "--max-context-tokens" in msg
    # the same episodes fit with the window
    col_w = Collector(ScriptedPolicy.for_env(GUESS), WGUESS, env_kwargs={"pad": 60}, max_context_tokens=400)
    assert all(not e.outcome.get("collector_truncated") for e in col_w.collect(4, seed=0))
    assert col_w.stats["collector_truncated_frac"] == 0.0


def test_probes_need_the_full_history():
    with pytest.raises(ValueError, match="history='full'"):
        Collector(RandomPolicy.for_env(GUESS), WGUESS, probes=[GoldAnswerProbe()]).collect(1, seed=0)


def test_branch_in_window_mode_reuses_the_recorded_prompt():
    rec = F.Recording(F.TorchBytePolicy(seed=4, eos_bias=1.0))
    col = Collector(rec, GUESS, history="window", sampling=Sampling(max_new_tokens=10))
    eps = [e for e in col.collect(3, seed=1) if e.num_turns >= 2]
    assert eps
    n_calls = len(rec.calls)
    branches = col.branch(eps, [1], n=2)
    assert len(branches) == 2 * len(eps)
    first_ctx = {tuple(ids) for ids, *_ in rec.calls[n_calls:]}
    for br in branches:
        orig = next(e for e in eps if e.episode_id == br.meta["branch_of"])
        assert br.turns[0] == orig.turns[0] and br.turns[1].obs_ids == orig.turns[1].obs_ids
        assert tuple(br.turns[1].obs_ids) in first_ctx and br.history == "window:1"
    with pytest.raises(ValueError, match="history"):
        Collector(rec, GUESS, history="full").branch(eps[:1], [1], n=1)


# ---------------------------------------------------------------------- issue 17: failures at the boundary


def test_generation_error_ends_the_episode_as_a_backend_failure(caplog):
    policy = F.FailingPolicy(RandomPolicy.for_env(GUESS), fail_at=1)
    with caplog.at_level(logging.WARNING):
        eps = Collector(policy, GUESS, group_size=2).collect(2, seed=0)
    assert "finish_reason='error'" in caplog.text
    for e in eps:
        if e.terminated:  # solved on the first guess, before any failure
            continue
        assert e.truncated and e.num_turns == 1
        assert e.outcome == {"success": 0.0, "return": e.total_reward, "generation_error": 1.0}
        assert e.meta["train_excluded"] == "generation_error"
    assert any(e.meta.get("train_excluded") == "generation_error" for e in eps)
    CreditBatch.from_episodes(eps)  # still packs
    # a first-turn failure leaves an episode without turns
    eps0 = Collector(F.FailingPolicy(RandomPolicy.for_env(GUESS), fail_at=0), GUESS).collect(1, seed=0)
    assert eps0[0].num_turns == 0 and eps0[0].meta["train_excluded"] == "generation_error"


def test_empty_generation_without_error_still_raises():
    policy = F.FailingPolicy(RandomPolicy.for_env(GUESS), fail_at=0, finish_reason="stop")
    with pytest.raises(ValueError, match="returned no tokens"):
        Collector(policy, GUESS).collect(1, seed=0)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_reward_is_flagged_and_kept(bad, caplog, tmp_path):
    store = RolloutStore(tmp_path / "eps.jsonl")
    with caplog.at_level(logging.WARNING):
        eps = Collector(ScriptedPolicy.for_env(GUESS), "test/NanGuess-v0", env_kwargs={"bad_reward": bad, "high": 64},
                        group_size=2, store=store).collect(2, seed=0)  # fmt: skip
    flagged = [e for e in eps if e.num_turns >= 2]
    assert flagged, "the expert needs at least two guesses on some task"
    for e in flagged:
        r = e.turns[1].reward
        assert (math.isnan(r) if math.isnan(bad) else r == bad)
        assert e.meta["train_excluded"] == "nonfinite_reward"
    assert all("train_excluded" not in e.meta for e in eps if e.num_turns < 2)
    assert "test/NanGuess-v0" in caplog.text and flagged[0].task_id in caplog.text
    assert len(store.read()) == len(eps)  # the store keeps them
