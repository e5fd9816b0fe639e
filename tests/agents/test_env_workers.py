"""Env workers (agents/env_workers.py): threads, processes and Ray actors step the Collector's envs and
give the same episodes as the serial path; crashes are retried on a fresh env; nothing is left running."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import textwrap
import time
from typing import Any

import gymnasium
import pytest

from creditgym.agents import Collector, ScriptedPolicy, tiny
from creditgym.agents.base import Sampling
from creditgym.envs.search import SEARCH_EASY
from creditgym.envs.tools import TOOLS_PYTHON
from creditgym.trajectory import Episode

TIMINGS = ("gen_s", "env_s")
TINY_RUN: dict[str, Any] = {"groups": 1, "env_kwargs": {"max_turns": 3}}  # the tiny model's run: short (CPU time)

# Envs for the crash and cleanup tests. They live in a module written to a temporary directory on
# sys.path, so spawned worker processes can import them too (spawn passes sys.path on).
FAKE_ENVS = '''
import subprocess
import threading

from creditgym.envs.search import SearchEnv

LOCK = threading.Lock()
BUDGET = [1]  # crashes left in this process


class CrashySearch(SearchEnv):
    """SearchEasy that raises on step `crash_at` of an episode: once per process (`always=False`) or
    every time; `noisy=True` makes observations differ between env instances (not deterministic)."""

    instances = 0

    def __init__(self, crash_at=0, always=False, noisy=False, **kw):
        super().__init__(hops=(1, 1), distractors=0, **kw)
        self.crash_at, self.always, self.noisy, self.n = crash_at, always, noisy, 0
        CrashySearch.instances += 1
        self.instance = CrashySearch.instances

    def reset(self, *, seed=None, options=None):
        self.n = 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.n += 1
        if self.n == self.crash_at:
            with LOCK:
                if self.always or BUDGET[0] > 0:
                    BUDGET[0] -= 1
                    raise RuntimeError("injected env crash")
        obs, r, term, trunc, info = super().step(action)
        return (obs + f" [instance {self.instance}]" if self.noisy else obs), r, term, trunc, info


class BackendSearch(SearchEnv):
    """SearchEasy with a long-lived backend process (a stand-in for a retriever server)."""

    def __init__(self, **kw):
        super().__init__(hops=(1, 1), distractors=0, **kw)
        self.proc = subprocess.Popen(["sleep", "300"])

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return obs, {**info, "backend_pid": self.proc.pid}

    def close(self):
        self.proc.kill()
        self.proc.wait()
        super().close()
'''


@pytest.fixture(scope="module")
def fake_envs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("env_worker_fakes")
    (path / "creditgym_test_env_worker_fakes.py").write_text(textwrap.dedent(FAKE_ENVS))
    sys.path.insert(0, str(path))
    import creditgym_test_env_worker_fakes as mod

    for name in ("CrashySearch", "BackendSearch"):
        env_id = f"test/{name}-v0"
        if env_id not in gymnasium.registry:
            gymnasium.register(env_id, entry_point=f"creditgym_test_env_worker_fakes:{name}")
    yield mod
    sys.path.remove(str(path))


def _strip(ep: Episode) -> Episode:
    """An episode without its ids and timings (what may differ between runs)."""
    turns = tuple(dataclasses.replace(t, info={k: v for k, v in t.info.items() if k not in TIMINGS}) for t in ep.turns)
    meta = {k: v for k, v in ep.meta.items() if k != "match_id"}
    return dataclasses.replace(ep, episode_id="", group_id="", turns=turns, meta=meta)


def _collect(policy: Any, env_id: str, workers: int = 0, backend: str = "thread", groups: int = 3,
             **kw: Any) -> tuple[list[Episode], dict[str, float]]:
    col = Collector(policy, env_id, group_size=2, sampling=Sampling(max_new_tokens=8), workers=workers,
                    worker_backend=backend, **kw)
    try:
        eps = col.collect(groups, seed=3)
        return [_strip(e) for e in eps], dict(col.stats)
    finally:
        col.close()


def _descendants() -> set[int]:
    """Pids of every live (non-zombie) process below this one, multiprocessing's resource tracker excepted."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if fields[0] != "Z" and b"resource_tracker" not in cmd:
                parent[int(name)] = int(fields[1])
    out, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def tiny_policy() -> Any:
    return tiny.build(seed=0)


@pytest.mark.parametrize("env_id", [SEARCH_EASY, TOOLS_PYTHON])
def test_thread_and_process_workers_give_the_serial_episodes(env_id: str, tiny_policy: Any) -> None:
    before = _descendants()
    for policy, kw in ((ScriptedPolicy.for_env(env_id), {}), (tiny_policy, TINY_RUN)):
        serial, _ = _collect(policy, env_id, **kw)
        assert any(e.num_turns > 1 for e in serial)
        threads, _ = _collect(policy, env_id, workers=2, backend="thread", **kw)
        assert threads == serial
        procs, stats = _collect(policy, env_id, workers=2, backend="process", **kw)
        assert procs == serial
        assert stats["env_errors"] == 0 and stats["worker_restarts"] == 0
    assert _descendants() <= before  # workers, guardians and sandbox runs are gone


@pytest.mark.parametrize("backend", ["serial", "thread", "process"])
def test_env_that_raises_once_is_replayed_on_a_fresh_env(backend: str, fake_envs: Any) -> None:
    reference, _ = _collect(ScriptedPolicy.for_env(SEARCH_EASY), "test/CrashySearch-v0")
    fake_envs.BUDGET[0] = 1
    workers = 0 if backend == "serial" else 2
    eps, stats = _collect(ScriptedPolicy.for_env(SEARCH_EASY), "test/CrashySearch-v0", workers, backend,
                          env_kwargs={"crash_at": 2})
    assert eps == reference  # the crash left no trace in the episodes
    assert stats["env_errors"] >= 1 and stats["env_recovered"] == stats["env_errors"] and stats["env_failed"] == 0


@pytest.mark.parametrize("kwargs", [{"always": True}, {"noisy": True}], ids=["fails-again", "not-deterministic"])
def test_unrecoverable_env_ends_the_episode_truncated_with_the_error(kwargs: dict[str, Any], fake_envs: Any) -> None:
    fake_envs.BUDGET[0] = 1
    eps, stats = _collect(ScriptedPolicy.for_env(SEARCH_EASY), "test/CrashySearch-v0", groups=2,
                          env_kwargs={"crash_at": 2, **kwargs})
    failed = [e for e in eps if e.outcome.get("env_error")]
    assert len(eps) == 4 and failed  # no episode (and no group) is lost
    for e in failed:
        assert e.truncated and not e.terminated and e.num_turns == 1 and e.outcome["success"] == 0.0
        assert e.meta["train_excluded"] == "env_error"
        assert "injected env crash" in e.meta["env_error"]
        if kwargs.get("noisy"):
            assert "not deterministic" in e.meta["env_error"]
    assert stats["env_failed"] == len(failed) and stats["env_errors"] >= len(failed)


class _KillWorker:
    """A scripted policy that SIGKILLs env worker 0 before its second generate call, noting the backend
    processes the worker had started."""

    def __init__(self, env_id: str):
        self.inner = ScriptedPolicy.for_env(env_id)
        self.tokenizer = self.inner.tokenizer
        self.col: Any = None
        self.calls = 0
        self.orphans: set[int] = set()

    def generate(self, contexts: Any, sampling: Any) -> Any:
        self.calls += 1
        if self.calls == 2:
            pid = self.col.pool.workers.worker_pids()[0]
            self.orphans = {p for p in _descendants() if _cmdline(p).startswith(b"sleep") and _ancestor(pid, p)}
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.01)
        return self.inner.generate(contexts, sampling)


def test_killed_worker_process_is_restarted_and_its_episodes_replayed(fake_envs: Any) -> None:
    before = _descendants()
    reference, _ = _collect(ScriptedPolicy.for_env(SEARCH_EASY), "test/BackendSearch-v0")
    policy = _KillWorker(SEARCH_EASY)
    col = Collector(policy, "test/BackendSearch-v0", group_size=2, workers=2, worker_backend="process")
    policy.col = col
    eps = col.collect(3, seed=3)
    assert policy.orphans and col.stats["worker_restarts"] == 1 and col.stats["env_failed"] == 0
    assert not any(_alive(p) for p in policy.orphans)  # the dead worker's guardian killed its backends
    assert [_strip(e) for e in eps] == reference
    assert any(_cmdline(p).startswith(b"sleep") for p in _descendants())  # the live envs' backends
    col.close()
    assert _descendants() <= before  # close() took every backend process with it


def _ancestor(pid: int, child: int) -> bool:
    while child > 1:
        try:
            with open(f"/proc/{child}/stat") as f:
                child = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
        if child == pid:
            return True
    return False


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_bad_backend_name_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="choose one of serial, thread, process, ray"):
        Collector(ScriptedPolicy.for_env(SEARCH_EASY), SEARCH_EASY, workers=2, worker_backend="fork")
    with pytest.raises(ValueError, match="workers must be >= 0"):
        Collector(ScriptedPolicy.for_env(SEARCH_EASY), SEARCH_EASY, workers=-1)


def test_missing_ray_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'creditgym\[ray\]'"):
        Collector(ScriptedPolicy.for_env(SEARCH_EASY), SEARCH_EASY, workers=2, worker_backend="ray")


def test_process_workers_refuse_unpicklable_env_fns() -> None:
    col = Collector(ScriptedPolicy.for_env(SEARCH_EASY), env_fns=[lambda: gymnasium.make(SEARCH_EASY)], workers=1,
                    worker_backend="process")
    with pytest.raises(ValueError, match="env_fns must be picklable"):
        col.collect(1, seed=0)
    col.close()


def test_ray_actors_give_the_serial_episodes_in_ci() -> None:
    """The CI-sized Ray check (issue 23): a local `ray.init(num_cpus=2)`, two actors, the scripted
    expert on SearchEasy; the full matrix (tiny model, ToolsPython) is the slow test below."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        policy = ScriptedPolicy.for_env(SEARCH_EASY)
        serial, _ = _collect(policy, SEARCH_EASY)
        on_ray, stats = _collect(policy, SEARCH_EASY, workers=2, backend="ray")
        assert on_ray == serial and stats["env_errors"] == 0 and any(e.num_turns > 1 for e in serial)
    finally:
        ray.shutdown()


@pytest.mark.slow  # ~85 s under load (ray.init and two actors importing torch)
def test_ray_workers_give_the_serial_episodes(tiny_policy: Any) -> None:
    ray = pytest.importorskip("ray")
    before = _descendants()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for env_id in (SEARCH_EASY, TOOLS_PYTHON):
            for policy, kw in ((ScriptedPolicy.for_env(env_id), {}), (tiny_policy, TINY_RUN)):
                serial, _ = _collect(policy, env_id, **kw)
                on_ray, stats = _collect(policy, env_id, workers=2, backend="ray", **kw)
                assert on_ray == serial and stats["env_errors"] == 0
    finally:
        ray.shutdown()
    assert not {p for p in _descendants() - before if _cmdline(p).startswith(b"sleep")}


def test_train_flags_reach_the_collector(tiny_policy: Any) -> None:
    from creditgym.cli.train import config_from_flags
    from creditgym.trainers import GRPOConfig, GRPOTrainer

    cfg = config_from_flags(GRPOConfig, ["--env-workers", "2", "--env-worker-backend", "process"])
    assert (cfg.env_workers, cfg.env_worker_backend) == (2, "process")
    trainer = GRPOTrainer(tiny_policy, SEARCH_EASY, cfg)
    assert (trainer.collector.pool.num_workers, trainer.collector.pool.worker_backend) == (2, "process")
    assert GRPOConfig().env_workers == 0  # serial by default


def test_rollout_bench_measures_env_workers() -> None:
    from creditgym.benchmarks.rollout import run_one

    row = run_one("scripted", ScriptedPolicy.for_env(SEARCH_EASY), SEARCH_EASY, 4, 2, 16, 0, workers=2,
                  worker_backend="thread", warmup=True)
    assert row["workers"] == "thread x2" and row["episodes"] == 4 and row["success"] == 1.0
    assert 0.0 < row["env_wall_s"] and row["steps_per_s"] > 0
