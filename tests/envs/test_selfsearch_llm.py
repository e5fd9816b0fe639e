"""SimSearch's OpenAI-compatible simulator backend against a fake chat server on 127.0.0.1."""

from __future__ import annotations

import re

import _fake_servers_search as fs  # loaded by tests/envs/conftest.py
import gymnasium
import numpy as np
import pytest

import creditgym
from creditgym.agents.scripted import play_episode
from creditgym.envs.search.retrievers import bm25_for_world, doc_as_text
from creditgym.envs.selfsearch import SimSearchEnv, parse_llm_documents
from creditgym.registry import scripted_functions

FAST = {"timeout_s": 0.25, "backoff_base_s": 0.01}


def chat(content):
    return fs.json_reply({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})


def simulator(path, headers, body):
    """Useful prompts get the BM25 documents of the test world; noisy ones get nonsense."""
    prompt = body["messages"][0]["content"]
    query = re.search(r"Query: (.*)", prompt).group(1)
    if "must not contain the answer" in prompt:
        return chat("\n".join(f"Doc {i}: Nobody knows anything about {query}." for i in range(1, 6)))
    docs = bm25_for_world(1).search(query, 6)
    return chat("Here you go.\n" + "\n".join(f"Doc {i}: {doc_as_text(d)}" for i, d in enumerate(docs, 1)))


def llm_env(url, **kw):
    return SimSearchEnv(split="test", source="llm", llm_url=url + "/v1", llm_model="sim-7b", api_key="sk-test", **{**FAST, **kw})


def test_request_path_headers_body_and_topk_cut():
    with fs.FakeServer(simulator) as srv:
        env = llm_env(srv.url)
        obs, info = env.reset(seed=0, options={"noise_prob": 0.0})
        obs, r, te, tr, info = env.step("<think>t</think><search>Ferbreithga Works headquarters</search>")
        req = srv.requests[0]
        assert req["path"] == "/v1/chat/completions"
        assert req["headers"]["authorization"] == "Bearer sk-test"
        assert req["headers"]["content-type"] == "application/json"
        body = req["body"]
        assert body["model"] == "sim-7b" and body["temperature"] == 0.0 and body["max_tokens"] == 600
        assert body["messages"][0]["role"] == "user" and len(body["messages"]) == 1
        prompt = body["messages"][0]["content"]
        assert env.task.prompt in prompt and env.task.gold[0] in prompt and "Ferbreithga Works headquarters" in prompt
        assert obs.startswith("\n\n<information>Doc 1: Ferbreithga Works. ") and "Doc 5:" in obs and "Doc 6:" not in obs
        assert info["noisy"] is False


def test_noisy_variant_prompt():
    with fs.FakeServer(simulator) as srv:
        env = llm_env(srv.url)
        env.reset(seed=0, options={"noise_prob": 1.0})
        obs, *_ = env.step("<search>q founder</search>")
        assert "Nobody knows" in obs and "must not contain the answer" in srv.requests[0]["body"]["messages"][0]["content"]


def test_no_api_key_sends_no_authorization():
    with fs.FakeServer(simulator) as srv:
        env = SimSearchEnv(split="test", source="llm", llm_url=srv.url + "/v1", llm_model="m", **FAST)
        env.reset(seed=0)
        env.step("<search>q</search>")
        assert "authorization" not in srv.requests[0]["headers"]


def test_429_and_500_are_retried():
    replies = [(429, b"slow down", 0.0), (500, b"oops", 0.0)]

    def handle(path, headers, body):
        return replies.pop(0) if replies else simulator(path, headers, body)

    with fs.FakeServer(handle) as srv:
        env = llm_env(srv.url)
        env.reset(seed=0, options={"noise_prob": 0.0})
        obs, r, te, tr, info = env.step("<search>Ferbreithga Works headquarters</search>")
        assert len(srv.requests) == 3 and "Doc 1:" in obs and "backend_error" not in info


@pytest.mark.parametrize(
    "handler, kind",
    [
        (lambda p, h, b: (500, b"down", 0.0), "http_500"),
        (lambda p, h, b: (429, b"", 0.0), "http_429"),
        (lambda p, h, b: fs.json_reply({"choices": []}), "bad_response"),
        (lambda p, h, b: fs.json_reply({"choices": [{"message": {}}]}), "bad_response"),
        (lambda p, h, b: fs.json_reply({"choices": [{"message": {"content": ["x"]}}]}), "bad_response"),
        (lambda p, h, b: fs.json_reply({"object": "error"}), "bad_response"),
        (lambda p, h, b: (200, b"{not json", 0.0), "bad_response"),
        (lambda p, h, b: (200, b"{}", 0.6), "timeout"),
    ],
)
def test_exhaustion_and_malformed_choices(handler, kind):
    with fs.FakeServer(handler) as srv:
        env = llm_env(srv.url, max_retries=2)
        env.reset(seed=0)
        obs, r, te, tr, info = env.step("<search>q</search>")
        assert info["backend_error"] == kind and not info["invalid"]
        assert obs == f"\n\n<information>Search failed ({kind}). Try again or answer.</information>\n\n"
        assert env.step("<answer>x</answer>")[2]


def test_llm_construction_errors():
    with pytest.raises(ValueError, match="llm_url"):
        SimSearchEnv(source="llm")
    with pytest.raises(ValueError, match="base_url"):
        SimSearchEnv(source="llm", llm_url="ftp://x", llm_model="m")


def test_parse_llm_documents():
    text = "Sure:\nDoc 1: a\nnot a doc\nDoc 2:  b \nDoc 3: c\nDoc 4: d"
    assert parse_llm_documents(text, 3) == ["a", "b", "c"]
    assert parse_llm_documents("no docs", 5) == []


def test_expert_and_check_env_with_fake_simulator():
    with fs.FakeServer(simulator) as srv:
        env = llm_env(srv.url)
        expert = scripted_functions("creditgym/SimSearch-v0")[0]
        act = lambda ctx, _: expert(ctx, np.random.default_rng(0))
        wins = [play_episode(env, act, s, options={"noise_prob": 0.0}).success for s in range(10)]
        assert np.mean(wins) >= 0.9
        gym_env = gymnasium.make("creditgym/SimSearch-v0", source="llm", llm_url=srv.url + "/v1", llm_model="m", **FAST)
        assert creditgym.check_env(gym_env).ok
