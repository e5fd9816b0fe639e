"""The per-env backend response log (issue 17): validated options and a byte cap on the LRU."""

from __future__ import annotations

import json
import logging

import pytest

from ._envs import EchoBackendEnv


def _play(env, seed, actions):
    env.reset(seed=seed)
    for a in actions:
        out = env.step(a)
        if out[2] or out[3]:
            break


@pytest.mark.parametrize(
    "junk",
    ["log", 3, {"a": 1}, [["fp"]], [[1, {"ok": 1}]], [["fp", "not a dict"]], [["fp", {"ok": 1}, "extra"]]],
)
def test_junk_backend_log_option_raises_with_the_expected_shape(junk):
    env = EchoBackendEnv(backend=str.upper)
    with pytest.raises(ValueError, match=r"backend_log.*\[fingerprint: str"):
        env.reset(seed=0, options={"backend_log": junk})


def test_valid_backend_log_option_is_accepted():
    env = EchoBackendEnv(backend=str.upper)
    env.reset(seed=0)
    env.step("a")
    log_ = env.get_state()["backend_log"]
    env.reset(seed=0, options={"backend_log": [tuple(e) for e in log_]})
    assert env.step("a")[0] == "backend said A" and env.calls == 1


def test_lru_is_capped_by_total_bytes_oldest_first():
    env = EchoBackendEnv(backend=lambda t: t * 100)
    one = len(json.dumps([["x" * 40, {"ok": "a" * 100}]] * 4))  # about one episode of 4 calls
    env.backend_log_max_bytes = int(2.5 * one)
    for seed in range(5):
        _play(env, seed, ["a"] * 4)
    assert [k[1] for k in env._backend_lru] == [3, 4]  # only the newest two fit
    assert env._backend_lru.total_bytes <= env.backend_log_max_bytes
    calls = env.calls
    _play(env, 4, ["a"] * 4)  # kept: replayed from the log
    assert env.calls == calls
    _play(env, 0, ["a"] * 4)  # evicted: called live
    assert env.calls == calls + 4


def test_an_episode_log_larger_than_the_cap_is_not_kept_and_warns_once(caplog):
    env = EchoBackendEnv(backend=lambda t: t * 10_000)
    env.backend_log_max_bytes = 5_000
    with caplog.at_level(logging.WARNING, logger="creditgym.envs.base"):
        _play(env, 0, ["a"] * 4)
        _play(env, 1, ["b"] * 4)
    assert len(env._backend_lru) == 0
    assert sum("backend_log_max_bytes" in r.getMessage() for r in caplog.records) == 1
    _play(env, 0, ["a"] * 4)  # replay calls the backend live
    assert env.calls == 12


def test_backend_log_cache_by_hand():
    from creditgym.envs.backend_log import BackendLogCache

    entry = [["a", {"ok": 1}]]  # json.dumps -> '[["a", {"ok": 1}]]', 18 bytes
    cache = BackendLogCache(max_episodes=3, max_bytes=40)
    assert cache.put(("t", 0), entry) == 18 and cache.put(("t", 1), entry) == 18
    assert cache.total_bytes == 36 and list(cache) == [("t", 0), ("t", 1)]
    cache.put(("t", 2), entry)  # 54 > 40: the oldest goes
    assert list(cache) == [("t", 1), ("t", 2)] and cache.get(("t", 0)) == []
    assert cache.put(("t", 3), [["a", {"ok": "x" * 40}]]) is None and len(cache) == 2
    cache.max_bytes = 10_000
    for s in range(3, 6):
        cache.put(("t", s), entry)
    assert list(cache) == [("t", 3), ("t", 4), ("t", 5)]  # the episode count cap
