"""The gateway: session assembly (hand-computed and property tests), pass-through of plain, streamed and
tool-call replies through the `openai` client, rewards, upstream faults, the crash-safe store and the
group driver, against the fake vLLM-like upstream of `creditgym bench gateway` on 127.0.0.1."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym import CreditBatch
from creditgym.benchmarks.gateway import END, FakeUpstream, fake_logprob, render
from creditgym.integrations.gateway import CallRecord, Gateway, assemble_episode, run_groups, split_rows
from creditgym.integrations.gateway_episode import UNUSABLE, StreamRecorder, reply_records
from creditgym.store import RolloutStore
from creditgym.trajectory import EXCLUDED, split_for_training

REPO = Path(__file__).resolve().parents[2]


def call(prompt: list[int], completion: list[int], base: float = 0.0) -> CallRecord:
    return CallRecord(
        tuple(prompt), tuple(completion), tuple(base - 0.1 * (i + 1) for i in range(len(completion)))
    )


def completion_of(text: str) -> tuple[list[int], list[float]]:
    ids = [*text.encode(), END]
    return ids, [fake_logprob(i, t) for i, t in enumerate(ids)]


@pytest.fixture()
def upstream():
    up = FakeUpstream(lambda body: "hi")
    yield up
    up.close()


@pytest.fixture()
def gateway(upstream, tmp_path):
    with Gateway(upstream.url, out_dir=tmp_path / "gw", backoff_base_s=0.01, max_retries=2) as gw:
        yield gw


def client_for(gw: Gateway, sid: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.session_url(sid), api_key="x", max_retries=0, timeout=30)


# ---------------------------------------------------------------------- assembly (pure)


def test_continuing_calls_make_one_full_history_episode():
    c1 = call([1, 2], [3, 4])
    c2 = call([1, 2, 3, 4, 5, 6], [7], base=-1.0)
    ep = assemble_episode([c1, c2], 2.5, session_id="s", task_id="t", group_id="g")
    assert ep.history == "full" and ep.num_turns == 2
    assert [t.obs_ids for t in ep.turns] == [(1, 2), (5, 6)]
    assert [t.action_ids for t in ep.turns] == [(3, 4), (7,)]
    assert ep.turns[0].action_logprobs == pytest.approx((-0.1, -0.2)) and ep.turns[
        1
    ].action_logprobs == pytest.approx((-1.1,))
    assert [t.reward for t in ep.turns] == [0.0, 2.5] and ep.total_reward == 2.5
    assert ep.meta["gateway"] == {"session_id": "s", "calls": 2, "rows": 1, "errors": 0}
    batch = CreditBatch.from_episodes([ep])
    assert batch.ids_RT.tolist() == [[1, 2, 3, 4, 5, 6, 7]]
    assert batch.loss_mask_RT.tolist() == [[False, False, True, True, False, False, True]]


def test_a_call_that_does_not_extend_starts_a_new_row_with_observations_masked():
    c1 = call([1, 2], [3, 4])
    c2 = call([1, 2, 3, 4, 5], [6])  # continues: 5 is an observation
    c3 = call([1, 9], [8, 7])  # history rewritten: a new row
    ep = assemble_episode([c1, c2, c3], 1.0)
    assert ep.history == "custom" and ep.num_turns == 2 and ep.meta["gateway"]["rows"] == 2
    t0, t1 = ep.turns
    assert t0.obs_ids == (1, 2) and t0.action_ids == (3, 4, 5, 6) and t0.action_loss_mask == (1, 1, 0, 1)
    assert t0.action_logprobs == pytest.approx((-0.1, -0.2, 0.0, -0.1))
    assert t1.obs_ids == (1, 9) and t1.action_ids == (8, 7) and t1.reward == 1.0 and t0.reward == 0.0
    batch = CreditBatch.from_episodes([ep])
    assert batch.ids_RT.tolist() == [[1, 2, 3, 4, 5, 6], [1, 9, 8, 7, 0, 0]]
    assert batch.loss_mask_RT.tolist() == [
        [False, False, True, True, False, True],
        [False, False, True, True, False, False],
    ]


def test_a_completion_rendered_differently_starts_a_new_row():
    # the prompt holds the previous turn's tokens, but not the exact ids the model sampled
    rows = split_rows([call([1], [2, 3]), call([1, 2, 4, 5], [6])])
    assert [len(r) for r in rows] == [1, 1]


def test_calls_without_token_ids_exclude_the_episode_and_empty_completions_are_skipped():
    ep = assemble_episode([call([1], [2]), call([1, 2], []), CallRecord((), (), (), has_ids=False)], 1.0)
    assert ep.num_turns == 1 and ep.meta[EXCLUDED] == "missing_token_ids"
    assert split_for_training([ep])[2]["dropped_groups"] == 1.0


def test_unreadable_replies_are_recorded_as_unusable_never_guessed():
    assert reply_records({"choices": [{"logprobs": "not an object"}]}, {}, chat=True) is None
    assert reply_records({"no": "choices"}, {}, chat=False) is None
    rec = StreamRecorder({}, chat=True)
    assert rec.add({"choices": [{"index": 0, "delta": {"content": "a"}, "token_ids": [97]}]})
    assert not rec.add({"choices": ["not an object"]})
    assert rec.records() == [UNUSABLE]
    assert assemble_episode([call([1], [2]), UNUSABLE], 1.0).meta[EXCLUDED] == "missing_token_ids"


sessions = st.lists(
    st.tuples(st.booleans(), st.lists(st.integers(1, 50), min_size=0, max_size=4), st.lists(st.integers(1, 50), min_size=1, max_size=4)),
    min_size=1, max_size=6,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(sessions)
def test_every_call_is_a_prefix_of_its_row_and_only_completions_are_trained(spec):
    """Property: whatever the mix of continuations and restarts, each call's prompt + completion is a
    prefix of its row, and the loss-masked tokens of a row are exactly its calls' completions."""
    calls, ctx = [], []
    for i, (cont, extra, comp) in enumerate(spec):
        prompt = [*ctx, *extra] if cont and ctx else [100 + i, *extra]
        calls.append(call(prompt, comp, base=-float(i)))
        ctx = prompt + comp
    ep = assemble_episode(calls, 1.0)
    batch = CreditBatch.from_episodes([ep])
    rows = split_rows(calls)
    assert batch.R == len(rows)
    for r, row in enumerate(rows):
        n = int(batch.attention_mask_RT[r].sum())
        ids = batch.ids_RT[r, :n].tolist()
        for c in row:
            assert ids[: len(c.prompt_ids) + len(c.completion_ids)] == [*c.prompt_ids, *c.completion_ids]
        mask = batch.loss_mask_RT[r, :n].tolist()
        assert [t for t, m in zip(ids, mask) if m] == [t for c in row for t in c.completion_ids]
        lps = batch.logprobs_RT[r, :n].tolist()
        assert [x for x, m in zip(lps, mask) if m] == pytest.approx([x for c in row for x in c.logprobs])


# ---------------------------------------------------------------------- through the openai client


def test_a_chat_session_is_recorded_exactly_and_the_client_gets_its_own_shape(gateway, upstream):
    sid = gateway.new_session(task_id="t1")
    client = client_for(gateway, sid)
    msgs = [{"role": "user", "content": "hello"}]
    r1 = client.chat.completions.create(model="fake", messages=msgs)
    assert r1.choices[0].message.content == "hi" and r1.choices[0].logprobs is None
    assert "token_ids" not in (r1.choices[0].model_extra or {}) and "prompt_token_ids" not in (
        r1.model_extra or {}
    )
    sent = upstream.requests[-1]
    assert sent["return_token_ids"] and sent["logprobs"] and sent["return_tokens_as_token_ids"]
    msgs += [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "again"}]
    client.chat.completions.create(model="fake", messages=msgs)
    ep = gateway.set_reward(sid, 1.0)
    ids, lps = completion_of("hi")
    p1, p2 = render(msgs[:1]), render(msgs)
    assert ep.history == "full" and ep.task_id == "t1" and ep.num_turns == 2
    assert ep.turns[0].obs_ids == tuple(p1) and ep.turns[1].obs_ids == tuple(p2[len(p1) + len(ids) :])
    assert all(t.action_ids == tuple(ids) and t.action_logprobs == tuple(lps) for t in ep.turns)
    assert gateway.episodes() == [ep] and gateway.episodes() == []


def test_client_logprobs_keep_their_text_tokens(gateway, upstream):
    sid = gateway.new_session()
    r = client_for(gateway, sid).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "x"}], logprobs=True
    )
    assert [e.token for e in r.choices[0].logprobs.content] == ["h", "i", "<end>"]
    assert "return_tokens_as_token_ids" not in upstream.requests[-1]
    assert gateway.calls(sid)[0].completion_ids == tuple(completion_of("hi")[0])


def test_streaming_passes_chunk_by_chunk_and_is_recorded(gateway):
    sid = gateway.new_session()
    stream = client_for(gateway, sid).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "s"}], stream=True
    )
    chunks = list(stream)
    assert len(chunks) == 3 and "".join(c.choices[0].delta.content or "" for c in chunks) == "hi"
    assert all(c.choices[0].logprobs is None for c in chunks)
    rec = gateway.calls(sid)[0]
    ids, lps = completion_of("hi")
    assert rec.prompt_ids == tuple(
        render([{"role": "user", "content": "s"}])
    ) and rec.completion_ids == tuple(ids)
    assert rec.logprobs == tuple(lps) and rec.text == "hi" and rec.finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_pass_through_untouched(tmp_path, stream):
    up = FakeUpstream(lambda body: {"name": "search", "arguments": '{"q": "paris"}'})
    tools = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
    with Gateway(up.url) as gw:
        sid = gw.new_session()
        direct = openai.OpenAI(base_url=up.url, api_key="x", max_retries=0)
        kw = {"model": "fake", "messages": [{"role": "user", "content": "q"}], "tools": tools}
        if stream:
            via = list(client_for(gw, sid).chat.completions.create(**kw, stream=True))
            ref = list(direct.chat.completions.create(**kw, stream=True))
            assert [c.choices[0].delta.tool_calls for c in via] == [
                c.choices[0].delta.tool_calls for c in ref
            ]
        else:
            via_msg = client_for(gw, sid).chat.completions.create(**kw).choices[0]
            ref_msg = direct.chat.completions.create(**kw).choices[0]
            assert (
                via_msg.message.tool_calls == ref_msg.message.tool_calls
                and via_msg.finish_reason == "tool_calls"
            )
        assert gw.calls(sid)[0].completion_ids == (*b'search{"q": "paris"}', END)
    up.close()


def test_completions_with_token_id_prompts(gateway):
    sid = gateway.new_session()
    r = client_for(gateway, sid).completions.create(model="fake", prompt=[5, 6, 7], max_tokens=4, logprobs=1)
    assert r.choices[0].text == "hi" and r.choices[0].logprobs.tokens == ["h", "i", "<end>"]
    rec = gateway.calls(sid)[0]
    assert (
        rec.prompt_ids == (5, 6, 7)
        and rec.endpoint == "completions"
        and rec.completion_ids == tuple(completion_of("hi")[0])
    )


def test_reward_endpoint_and_its_errors(gateway):
    sid = gateway.new_session(task_id="t")
    client_for(gateway, sid).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "x"}]
    )
    base = f"{gateway.url}/s/{sid}/reward"
    assert httpx.post(base, json={"nope": 1}).status_code == 400
    r = httpx.post(base, json={"reward": 0.5})
    assert r.status_code == 200 and r.json()["turns"] == 1
    assert httpx.post(base, json={"reward": 0.5}).json()["error"]["type"] == "not_found"  # already finished
    assert httpx.get(f"{gateway.url}/elsewhere").status_code == 404
    assert httpx.get(base).status_code == 405
    (ep,) = gateway.episodes()
    assert ep.total_reward == 0.5 and ep.outcome == {"reward": 0.5}
    assert client_for(gateway, "other").models.list().data[0].id == "fake"


# ---------------------------------------------------------------------- faults and the store


def test_upstream_faults_are_retried_then_reported_in_openai_shape(gateway, upstream):
    sid = gateway.new_session()
    client = client_for(gateway, sid)
    upstream.faults += [503, 0]  # a 5xx and a dropped connection: retried, then served
    assert (
        client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "a"}])
        .choices[0]
        .message.content
        == "hi"
    )
    upstream.faults += [503, 500, 502]  # more faults than retries
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "b"}])
    assert info.value.status_code == 502 and "failed after 3 attempts" in info.value.body["message"]
    upstream.faults += [503, 0, 504]
    with pytest.raises(openai.APIStatusError):
        list(
            client.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": "c"}], stream=True
            )
        )
    upstream.faults += [400]  # a client error passes through at once
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "d"}])
    ep = gateway.set_reward(sid, 1.0)  # the session and its good call survive
    assert ep.num_turns == 1 and ep.meta["gateway"]["errors"] == 2 and EXCLUDED not in ep.meta


def test_a_stream_that_breaks_midway_ends_with_an_error_event_and_records_nothing(gateway, upstream):
    sid = gateway.new_session()
    upstream.faults.append(-1)
    stream = client_for(gateway, sid).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "s"}], stream=True
    )
    with pytest.raises(openai.APIError, match="upstream stream broke"):
        list(stream)
    assert gateway.calls(sid) == []
    assert gateway.set_reward(sid, 0.0).meta["gateway"]["errors"] == 1


def test_a_dead_upstream_never_crashes_the_gateway(tmp_path):
    with Gateway("http://127.0.0.1:9/v1", max_retries=1, backoff_base_s=0.01) as gw:
        with pytest.raises(openai.APIStatusError) as info:
            client_for(gw, "s").chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
        assert info.value.status_code == 502
        assert httpx.post(f"{gw.session_url('s')}/chat/completions", content=b"{not json").status_code == 400


def test_finished_episodes_are_on_disk_at_once_and_open_sessions_at_close(upstream, tmp_path):
    gw = Gateway(upstream.url, out_dir=tmp_path)
    for sid in ("a", "b"):
        client_for(gw, sid).chat.completions.create(model="fake", messages=[{"role": "user", "content": sid}])
    ep = gw.set_reward("a", 1.0)
    assert RolloutStore(tmp_path / "episodes.jsonl").read() == [ep]  # before close: written and fsynced
    gw.close()
    stored = RolloutStore(tmp_path / "episodes.jsonl").read()
    assert [e.meta["gateway"]["session_id"] for e in stored] == ["a", "b"] and stored[1].meta[
        EXCLUDED
    ] == "no_reward"


def test_a_killed_gateway_command_keeps_its_finished_episodes(upstream, tmp_path):
    """`creditgym gateway` in its own process, SIGKILLed: the session rewarded before is on disk."""
    cmd = [
        sys.executable,
        "-m",
        "creditgym",
        "gateway",
        "--upstream",
        upstream.url,
        "--port",
        "0",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("gateway at "), line
        url = line.split()[2].split("/s/")[0]
        for sid in ("a", "b"):
            openai.OpenAI(base_url=f"{url}/s/{sid}/v1", api_key="x", max_retries=0).chat.completions.create(
                model="fake", messages=[{"role": "user", "content": sid}])  # fmt: skip
        assert httpx.post(f"{url}/s/a/reward", json={"reward": 1.0}).status_code == 200
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    (ep,) = RolloutStore(tmp_path / "episodes.jsonl").read()
    assert ep.total_reward == 1.0 and ep.turns[0].action_ids == tuple(completion_of("hi")[0])


# ---------------------------------------------------------------------- the group driver


def test_run_groups_with_a_callable_forms_groups_and_reports_failures(gateway):
    def agent(url: str, task: str) -> float | None:
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        client.chat.completions.create(model="fake", messages=[{"role": "user", "content": task}])
        if task == "bad":
            raise RuntimeError("agent bug")
        return 1.0 if task == "one" else None if task == "posts" else 0.0

    eps = run_groups(agent, ["one", "bad", "posts"], 2, gateway, max_workers=3)
    assert [e.task_id for e in eps] == ["one", "one", "bad", "bad", "posts", "posts"]
    assert len({e.group_id for e in eps}) == 3 and eps[0].group_id == eps[1].group_id
    assert [e.total_reward for e in eps[:2]] == [1.0, 1.0]
    assert all(e.meta[EXCLUDED] == "agent_error" for e in eps[2:])
    trained, _, metrics = split_for_training(eps)
    assert len(trained) == 2 and metrics["dropped_groups_agent_error"] == 2.0


def test_run_groups_runs_the_openai_only_example_script(tmp_path):
    up = FakeUpstream(
        lambda body: "<answer>paris</answer>" if len(body["messages"]) > 2 else "<search>france</search>"
    )
    task = {
        "task_id": "cap",
        "question": "Capital of France?",
        "answer": "paris",
        "docs": {"france": "Paris is the capital."},
    }
    with Gateway(up.url, out_dir=tmp_path) as gw:
        eps = run_groups([sys.executable, str(REPO / "examples" / "gateway_agent.py")], [task], 2, gw)
    up.close()
    assert [e.total_reward for e in eps] == [1.0, 1.0] and eps[0].group_id == eps[1].group_id
    (ep,) = {e.episode_id: e for e in eps[:1]}.values()
    assert ep.history == "full" and ep.num_turns == 2
    assert ep.turns[1].action_ids == tuple(completion_of("<answer>paris</answer>")[0])
    assert b"<information>Paris is the capital.</information>" in bytes(
        t for t in ep.turns[1].obs_ids if t < 256
    )
    assert len(RolloutStore(tmp_path / "episodes.jsonl").read()) == 2


# ---------------------------------------------------------------------- end to end: train through the gateway

TINY_KW = dict(
    vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1
)
TASKS = [
    {
        "task_id": "fr",
        "question": "What is the capital of France?",
        "answer": "paris",
        "docs": {"france": "Paris."},
    },
    {
        "task_id": "no",
        "question": "What is the capital of Norway?",
        "answer": "oslo",
        "docs": {"norway": "Oslo."},
    },
]


def completions_of(ep) -> list[tuple[int, ...]]:
    """Each call's completion in an episode: the runs of trained (loss mask 1) action tokens."""
    runs: list[tuple[int, ...]] = []
    for t in ep.turns:
        run: list[int] = []
        for tok, m in [*zip(t.action_ids, t.action_loss_mask), (None, 0)]:
            if m:
                run.append(tok)
            elif run:
                runs.append(tuple(run))
                run = []
    return runs


def test_an_openai_only_agent_trains_two_steps_through_the_gateway(tmp_path):
    """examples/gateway_agent.py (imports only openai) plays through the gateway in front of
    `start_server`; GRPO's `train_on` updates the tiny model and `OpenAIPolicy.sync_from` reloads it
    into the server after each step. The recorded tokens and logprobs are exactly the server's."""
    import torch

    from creditgym.agents import OpenAIPolicy, tiny
    from creditgym.agents.hf import HFPolicy
    from creditgym.envs.search import SEARCH_EASY
    from creditgym.integrations.serve import start_server
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    torch.set_num_threads(1)
    policy = tiny.build(seed=0, cache_dir=tmp_path / "cache", env_ids=[], config=tiny.TinyConfig(**TINY_KW))
    served = HFPolicy.from_pretrained(policy.save(tmp_path / "model"), seed=0)
    generated: list[tuple[tuple[int, ...], tuple[float, ...]]] = []
    plain_generate = served.generate

    def recording_generate(contexts, sampling):  # what the server sampled, to compare with the records
        gens = plain_generate(contexts, sampling)
        generated.extend((tuple(g.token_ids), tuple(g.logprobs)) for g in gens)
        return gens

    served.generate = recording_generate  # type: ignore[method-assign]
    cfg = GRPOConfig(
        steps=2, num_groups=2, group_size=2, max_new_tokens=12, lr=1e-2, tensorboard=False, seed=0
    )
    agent = [sys.executable, str(REPO / "examples" / "gateway_agent.py")]
    with (
        start_server(served, model_name="tiny") as server,
        Gateway(server.url, out_dir=tmp_path / "gw") as gw,
    ):
        generator = OpenAIPolicy(
            server.url, "tiny", api="completions", tokenizer=policy.tokenizer, server="vllm"
        )
        trainer = GRPOTrainer(policy, SEARCH_EASY, cfg, generator=generator)
        start = torch.cat([p.detach().flatten().clone() for p in policy.model.parameters()])
        for _ in range(2):
            generated.clear()
            # one run at a time: the server's sampler then sees the same request order every time
            eps = run_groups(agent, TASKS, 2, gw, max_workers=1, env={"AGENT_MAX_TOKENS": "12"})
            assert len(eps) == 4 and len({e.group_id for e in eps}) == 2
            assert not any(EXCLUDED in e.meta for e in eps), [e.meta for e in eps]
            recorded = sorted(c for e in eps for c in completions_of(e))
            assert recorded == sorted(ids for ids, _ in generated)
            lps = {ids: lp for ids, lp in generated}
            for e in eps:
                for t in e.turns:
                    got = [x for x, m in zip(t.action_logprobs, t.action_loss_mask) if m]
                    want = [x for c in completions_of(type(e)(turns=(t,))) for x in lps[c]]
                    assert got == want  # exactly the server's floats, through JSON both ways
            metrics = trainer.train_on(eps)
            assert math.isfinite(metrics["pg_loss"]) and metrics["grad_norm"] > 0, metrics
            assert metrics["episodes"] == 4 and metrics["mismatch/max_abs"] < 1e-4  # trainer and server agree
        end = torch.cat([p.detach().flatten() for p in policy.model.parameters()])
        assert not torch.equal(start, end)
        assert torch.equal(
            end, torch.cat([p.detach().flatten() for p in served.model.parameters()])
        )  # synced
    assert len(RolloutStore(tmp_path / "gw" / "episodes.jsonl").read()) == 8


@pytest.mark.slow  # ~30 s: builds a tokenizer and runs the agent in 6 subprocesses; the test above covers the path
def test_the_training_example_runs_one_step(tmp_path, monkeypatch, capsys):
    import importlib.util

    monkeypatch.setenv("CREDITGYM_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location(
        "train_through_gateway", REPO / "examples" / "train_through_gateway.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    argv = [
        "--steps",
        "1",
        "--group-size",
        "2",
        "--max-tokens",
        "8",
        "--hidden",
        "32",
        "--out-dir",
        str(tmp_path / "run"),
    ]
    (metrics,) = module.main(argv)
    assert metrics["episodes"] == 6 and math.isfinite(metrics["pg_loss"])
    assert "step 0: reward" in capsys.readouterr().out
    assert len(RolloutStore(tmp_path / "run" / "episodes.jsonl").read()) == 6


def test_the_latency_benchmark_prints_both_paths(capsys):
    from creditgym.benchmarks.gateway import main

    main(calls=5, warmup=1, reply_chars=8)
    out = capsys.readouterr().out
    assert all(f"{k} " in out for k in ("direct", "gateway", "added"))
