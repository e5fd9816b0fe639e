"""Env workers: where the Collector's envs live and step (issue 23, item 3; docs/collector.md).

Generation stays batched in the Collector's process (one model); what moves to workers is env
stepping: `reset`, `step`, `close` and the env's own backends (sandbox, retriever), so the latency of
one env overlaps that of the others. One interface, four backends:

* `SerialPool`: every env in the Collector's process, stepped one after the other (the default);
* `ThreadPool`: the same envs stepped from N threads (envs that wait on subprocesses or sockets, such
  as the sandboxed Python tool, release the GIL while they wait);
* `ProcessPool`: N worker processes (multiprocessing, spawn); each env is built inside its worker from
  `(env spec, kwargs)` or a picklable constructor and stays there;
* `RayPool`: N Ray actors (`pip install 'creditgym[ray]'`), on one machine or across a cluster.

Results are returned in request order, so the Collector consumes them in the same order whatever the
worker timing, and episodes equal the serial path's (apart from ids and timings).

Crashes: an env that raises, or a worker that dies, is rebuilt fresh (in a restarted worker if need
be), reset with the episode's seed and options, and replayed with the episode's actions. When the
replay reproduces the recorded observations and rewards (the determinism contract), the failed call
is retried; otherwise the call comes back as an `EnvFailure` and the Collector ends the episode as
truncated with the error recorded. Every error, retry and restart is counted in `stats` and logged.

Cleanup: `close()` closes every env (sandboxes, MCP servers, retriever clients) and stops the
workers. On Linux each worker process runs under a small guardian process that is the subreaper of
the worker's descendants: when the worker dies, whatever it started (a sandbox run, a backend server)
is re-parented to the guardian, which kills it.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import gymnasium

__all__ = [
    "BACKENDS",
    "EnvFailure",
    "EnvHandle",
    "ProcessPool",
    "RayPool",
    "ResetResult",
    "SerialPool",
    "StepResult",
    "ThreadPool",
    "WorkerPool",
    "check_workers",
    "make_worker_pool",
]

log = logging.getLogger(__name__)

BACKENDS = ("serial", "thread", "process", "ray")
RAY_HINT = "the ray env-worker backend needs ray: pip install 'creditgym[ray]'"

Call = tuple[Any, ...]


@dataclass(frozen=True)
class StepResult:
    """One `env.step`, as the worker saw it; `env_s` is the step's own wall time in the worker."""

    obs: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    env_s: float = 0.0


@dataclass(frozen=True)
class ResetResult:
    """`env.reset(seed, options)` followed by the replayed `actions` (branching), each step's result."""

    obs: str
    info: dict[str, Any]
    steps: tuple[StepResult, ...] = ()
    reset_s: float = 0.0


@dataclass(frozen=True)
class EnvFailure:
    """A call that failed even on a fresh env: the error text (a traceback, or why replay failed)."""

    error: str


@dataclass
class EnvHandle:
    """The Collector's view of one env living in a worker: what it needs from `env.unwrapped`
    (metadata, type name, default role) and the record of the current episode that a fresh env
    is replayed from after a crash."""

    slot: int
    worker: int
    epoch: int
    metadata: dict[str, Any]
    name: str
    default_role: str
    build: Call
    broken: bool = False
    reset_call: Call | None = None
    reset_obs: str = ""
    steps: list[tuple[str, str, float]] = field(default_factory=list)  # (action, obs, reward)


@dataclass(frozen=True)
class _EnvInfo:
    metadata: dict[str, Any]
    name: str
    default_role: str


@dataclass(frozen=True)
class _Crash:
    error: str


# ---------------------------------------------------------------------------- worker side
class _WorkerState:
    """The envs of one worker by slot, and the attributes every new env gets (`set_attr`)."""

    def __init__(self, responder: Callable[[Sequence[Any]], list[str]] | None = None):
        self.envs: dict[int, gymnasium.Env] = {}
        self.responder = responder

    def execute(self, slot: int, call: Call) -> Any:
        """Run one call; an exception comes back as a `_Crash` with its traceback."""
        try:
            return self._execute(slot, call)
        except Exception:
            return _Crash(traceback.format_exc(limit=8))

    def _execute(self, slot: int, call: Call) -> Any:
        kind = call[0]
        if kind == "make":
            _, spec, kwargs, fn, attrs = call
            self._close(slot)
            env = fn() if fn is not None else gymnasium.make(spec, **kwargs)
            self.envs[slot] = env
            base = env.unwrapped
            for name, value in attrs.items():
                setattr(base, name, value)
            if base.metadata.get("requires_responder") and self.responder is not None:
                base.set_responder(self.responder)
            return _EnvInfo(dict(base.metadata), type(base).__name__, str(getattr(base, "role", "agent") or "agent"))
        env = self.envs[slot]
        if kind == "reset":
            _, seed, options, actions = call
            t0 = time.perf_counter()
            obs, info = env.reset(seed=seed, options=options)
            reset_s = time.perf_counter() - t0
            return ResetResult(obs, dict(info), tuple(self._step(env, a) for a in actions), reset_s)
        if kind == "step":
            return self._step(env, call[1])
        if kind == "set_attr":
            setattr(env.unwrapped, call[1], call[2])
            return None
        if kind == "backend_log":
            get_state = getattr(env.unwrapped, "get_state", None)
            try:
                return list(get_state().get("backend_log") or []) if get_state is not None else []
            except NotImplementedError:
                return []
        if kind == "close":
            self._close(slot)
            return None
        raise ValueError(f"unknown env worker call {kind!r}")

    @staticmethod
    def _step(env: gymnasium.Env, action: str) -> StepResult:
        t0 = time.perf_counter()
        obs, reward, terminated, truncated, info = env.step(action)
        return StepResult(obs, float(reward), bool(terminated), bool(truncated), dict(info), time.perf_counter() - t0)

    def _close(self, slot: int) -> None:
        env = self.envs.pop(slot, None)
        if env is not None:
            try:
                env.close()
            except Exception:  # a broken env being replaced: its close error is not the caller's
                log.warning("closing a broken env raised:\n%s", traceback.format_exc(limit=4))

    def close_all(self) -> None:
        for slot in list(self.envs):
            self._close(slot)


# ---------------------------------------------------------------------------- the pool
class WorkerPool:
    """Builds, resets and steps envs in workers, in batches, results in request order.

    Subclasses implement `_run(calls)` (run a batch of `(handle, call)` on the handles' workers,
    returning the value or a `_Crash` per call, and restarting a worker that died) and `_shutdown()`.
    """

    backend = "serial"

    def __init__(self, num_workers: int = 1, retries: int = 1):
        self.num_workers = max(1, int(num_workers))
        self.retries = int(retries)
        self.attrs: dict[str, Any] = {}
        self.handles: list[EnvHandle] = []
        self.epochs = [0] * self.num_workers
        self.stats = {"env_errors": 0, "env_recovered": 0, "env_failed": 0, "worker_restarts": 0}
        self._slots = 0

    # -- public interface
    def make(self, spec: Any, kwargs: Mapping[str, Any], fn: Callable[[], gymnasium.Env] | None = None) -> EnvHandle:
        """A new env from a gymnasium EnvSpec + kwargs, or from a constructor `fn`."""
        slot = self._slots
        self._slots += 1
        worker = slot % self.num_workers
        build: Call = ("make", spec, dict(kwargs), fn)
        handle = EnvHandle(slot, worker, self.epochs[worker], {}, "", "agent", build)
        out = self._run([(handle, (*build, dict(self.attrs)))])[0]
        if isinstance(out, _Crash):
            raise RuntimeError(f"building env {getattr(spec, 'id', spec)!r} in a {self.backend} worker failed:\n{out.error}")
        self._adopt(handle, out)
        if handle.metadata.get("requires_responder") and self.backend != "serial":
            raise ValueError(f"{handle.name} declares requires_responder (it samples the policy inside step), which "
                             f"the {self.backend} env workers cannot call back; collect it with workers=0")
        self.handles.append(handle)
        return handle

    def reset_many(self, requests: Sequence[tuple[EnvHandle, int | None, dict[str, Any] | None, Sequence[str]]]
                   ) -> list[ResetResult | EnvFailure]:
        """`(handle, seed, options, replay_actions)` each: reset, then step the replay actions."""
        calls = [(h, ("reset", seed, options, tuple(actions))) for h, seed, options, actions in requests]
        return self._with_recovery(calls)

    def step_many(self, requests: Sequence[tuple[EnvHandle, str]]) -> list[StepResult | EnvFailure]:
        return self._with_recovery([(h, ("step", action)) for h, action in requests])

    def backend_logs(self, handles: Sequence[EnvHandle]) -> list[list[Any]]:
        """Each env's backend response log of its current episode (ENVS.md section 0); [] when lost."""
        live = [h for h in handles if not self._lost(h)]
        outs = dict(zip((h.slot for h in live), self._run([(h, ("backend_log",)) for h in live])))
        return [o if isinstance(o := outs.get(h.slot), list) else [] for h in handles]

    def set_attr(self, name: str, value: Any) -> None:
        """`env.unwrapped.<name> = value` on every env now and on every env built later."""
        self.attrs[name] = value
        live = [h for h in self.handles if not self._lost(h)]
        for h, out in zip(live, self._run([(h, ("set_attr", name, value)) for h in live])):
            if isinstance(out, _Crash):
                h.broken = True  # rebuilt (with the attribute) before its next use

    def close(self) -> None:
        """Close every env (its sandbox and backend processes go with it) and stop the workers."""
        live = [h for h in self.handles if not self._lost(h)]
        for h, out in zip(live, self._run([(h, ("close",)) for h in live])):
            if isinstance(out, _Crash):
                log.warning("closing env %s raised:\n%s", h.name, out.error)
        self.handles.clear()
        self._shutdown()

    # -- recovery
    def _lost(self, h: EnvHandle) -> bool:
        return h.broken or h.epoch != self.epochs[h.worker]

    def _with_recovery(self, calls: list[tuple[EnvHandle, Call]]) -> list[Any]:
        results: list[Any] = [None] * len(calls)
        errors: dict[int, str] = {}
        todo = list(range(len(calls)))
        for attempt in range(self.retries + 1):
            lost = [i for i in todo if self._lost(calls[i][0])]
            for i, why in zip(lost, self._restore([calls[i] for i in lost])):
                if why is not None:
                    errors[i] = f"{errors.get(i, 'the worker holding it restarted')}\nthen recovery failed: {why}"
                    todo.remove(i)
            outs = self._run([calls[i] for i in todo])
            failed = []
            for i, out in zip(todo, outs):
                handle, call = calls[i]
                if isinstance(out, _Crash):
                    self.stats["env_errors"] += 1
                    log.warning("env %s (slot %d, %s worker %d) failed on %s (attempt %d of %d):\n%s", handle.name,
                                handle.slot, self.backend, handle.worker, call[0], attempt + 1, self.retries + 1, out.error)
                    handle.broken, errors[i] = True, out.error
                    failed.append(i)
                    continue
                if i in errors:
                    self.stats["env_recovered"] += 1
                    log.warning("env %s (slot %d) recovered on a fresh env", handle.name, handle.slot)
                self._record(handle, call, out)
                results[i] = out
            todo = failed
            if not todo:
                break
        for i in [j for j, r in enumerate(results) if r is None]:
            self.stats["env_failed"] += 1
            results[i] = EnvFailure(errors.get(i, "unknown env failure"))
        return results

    def _record(self, h: EnvHandle, call: Call, out: Any) -> None:
        if call[0] == "reset":
            h.reset_call, h.reset_obs = call, out.obs
            h.steps = [(a, s.obs, s.reward) for a, s in zip(call[3], out.steps)]
        elif call[0] == "step":
            h.steps.append((call[1], out.obs, out.reward))

    def _restore(self, calls: list[tuple[EnvHandle, Call]]) -> list[str | None]:
        """Rebuild each lost env and replay its episode so far; None where that worked, else why not."""
        handles = [h for h, _ in calls]
        for h in handles:
            h.epoch = self.epochs[h.worker]
        made = self._run([(h, (*h.build, dict(self.attrs))) for h in handles])
        why: list[str | None] = [out.error if isinstance(out, _Crash) else None for out in made]
        replay = [i for i, (h, call) in enumerate(calls) if why[i] is None and call[0] != "reset" and h.reset_call]
        outs = self._run([(handles[i], (*handles[i].reset_call[:3], tuple(a for a, _, _ in handles[i].steps)))  # type: ignore[index]
                          for i in replay])
        for i, out in zip(replay, outs):
            h = handles[i]
            if isinstance(out, _Crash):
                why[i] = out.error
            elif [out.obs, *((s.obs, s.reward) for s in out.steps)] != [h.reset_obs, *((o, r) for _, o, r in h.steps)]:
                why[i] = ("replaying the episode's actions on a fresh env gave other observations or rewards than "
                          "recorded (the env is not deterministic), so the episode cannot be resumed")
        for i, h in enumerate(handles):
            h.broken = why[i] is not None
        return why

    def _adopt(self, h: EnvHandle, info: _EnvInfo) -> None:
        h.metadata, h.name, h.default_role = info.metadata, info.name, info.default_role

    # -- backend
    def _run(self, calls: Sequence[tuple[EnvHandle, Call]]) -> list[Any]:
        raise NotImplementedError

    def _shutdown(self) -> None:
        pass

    def local_env(self, h: EnvHandle) -> gymnasium.Env | None:
        """The env object itself where it lives in this process (serial and thread pools)."""
        return None


class SerialPool(WorkerPool):
    """Every env in this process, stepped one after the other (the Collector's default)."""

    backend = "serial"

    def __init__(self, num_workers: int = 1, retries: int = 1,
                 responder: Callable[[Sequence[Any]], list[str]] | None = None):
        super().__init__(1, retries)
        self.state = _WorkerState(responder)

    def _run(self, calls: Sequence[tuple[EnvHandle, Call]]) -> list[Any]:
        return [self.state.execute(h.slot, call) for h, call in calls]

    def _shutdown(self) -> None:
        self.state.close_all()

    def local_env(self, h: EnvHandle) -> gymnasium.Env | None:
        return self.state.envs.get(h.slot)


class ThreadPool(SerialPool):
    """The envs of this process stepped from `num_workers` threads (one call per env at a time)."""

    backend = "thread"

    def __init__(self, num_workers: int = 2, retries: int = 1):
        super().__init__(1, retries, None)  # one place (this process) holds every env
        self.threads = max(1, int(num_workers))
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="creditgym-env")

    def _run(self, calls: Sequence[tuple[EnvHandle, Call]]) -> list[Any]:
        if len(calls) <= 1:
            return super()._run(calls)
        return list(self._executor.map(lambda hc: self.state.execute(hc[0].slot, hc[1]), calls))

    def _shutdown(self) -> None:
        super()._shutdown()
        self._executor.shutdown(wait=True)


class _Batched(WorkerPool):
    """Remote workers: each batch is split by worker, sent to all of them, then gathered."""

    def _run(self, calls: Sequence[tuple[EnvHandle, Call]]) -> list[Any]:
        by_worker: dict[int, list[int]] = {}
        for i, (h, _) in enumerate(calls):
            by_worker.setdefault(h.worker, []).append(i)
        pending = {w: self._send(w, [(calls[i][0].slot, calls[i][1]) for i in idx]) for w, idx in by_worker.items()}
        out: list[Any] = [None] * len(calls)
        for w, idx in by_worker.items():
            try:
                got = self._receive(w, pending[w])
            except Exception as e:  # the worker died mid-batch: its calls failed, and so did its other envs
                got = [_Crash(f"{self.backend} env worker {w} died ({type(e).__name__}: {e})")] * len(idx)
                self._restart(w)
            for i, o in zip(idx, got):
                out[i] = o
        return out

    def _restart(self, w: int) -> None:
        self.stats["worker_restarts"] += 1
        self.epochs[w] += 1
        log.warning("%s env worker %d died; restarting it (its envs are rebuilt and replayed)", self.backend, w)
        self._start(w)

    def _send(self, w: int, batch: list[tuple[int, Call]]) -> Any:
        raise NotImplementedError

    def _receive(self, w: int, token: Any) -> list[Any]:
        raise NotImplementedError

    def _start(self, w: int) -> None:
        raise NotImplementedError


def _children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (from /proc)."""
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(name))
    return kids


def _guard(conn: Any) -> None:
    """Linux: become the subreaper of the worker's descendants and fork the worker; when it exits
    (or is killed), kill and reap everything it left behind, then exit."""
    import ctypes

    pr_set_child_subreaper = 36
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    child = os.fork()
    if child == 0:
        return
    conn.close()  # only the worker talks to the Collector, so its death closes the pipe
    os.waitpid(child, 0)
    while True:
        for pid in _children(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)


def _process_main(conn: Any, guard: bool) -> None:
    if guard:
        _guard(conn)  # returns in the worker (the guardian never returns)
    conn.send(os.getpid())
    state = _WorkerState()
    try:
        while True:
            try:
                batch = conn.recv()
            except (EOFError, OSError):  # the Collector's process is gone
                break
            if batch is None:
                break
            conn.send([state.execute(slot, call) for slot, call in batch])
    finally:
        state.close_all()  # then a normal exit: finalizers release what libraries registered


class ProcessPool(_Batched):
    """`num_workers` worker processes (multiprocessing `start_method`, spawn by default); envs are
    built inside them from the gymnasium EnvSpec and kwargs, or a picklable constructor."""

    backend = "process"

    def __init__(self, num_workers: int = 2, retries: int = 1, start_method: str = "spawn"):
        import multiprocessing

        super().__init__(num_workers, retries)
        self._ctx: Any = multiprocessing.get_context(start_method)
        self._guard = sys.platform.startswith("linux")
        self._procs: list[Any] = [None] * self.num_workers
        self._conns: list[Any] = [None] * self.num_workers
        self._pids = [0] * self.num_workers
        for w in range(self.num_workers):
            self._start(w)

    def _start(self, w: int) -> None:
        old = self._procs[w]
        if old is not None:
            self._conns[w].close()
            old.join(timeout=10)  # the guardian kills the dead worker's leftovers, then exits
            if old.is_alive():
                old.kill()
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_process_main, args=(child, self._guard), daemon=True,
                                 name=f"creditgym-env-worker-{w}")
        proc.start()
        child.close()
        self._procs[w], self._conns[w] = proc, parent
        try:
            self._pids[w] = int(parent.recv())
        except EOFError:
            proc.join(timeout=10)
            raise RuntimeError(
                f"env worker process {w} exited at start (exit code {proc.exitcode}); with the spawn start method "
                "the main module is imported again in each worker, so run from a file (or -m module) whose entry "
                "point sits under `if __name__ == '__main__':`, or use worker_backend='thread'") from None

    def worker_pids(self) -> list[int]:
        """The pid of each worker process (the one that holds the envs)."""
        return list(self._pids)

    def _send(self, w: int, batch: list[tuple[int, Call]]) -> Any:
        try:
            self._conns[w].send(batch)  # pickles first: nothing is written when pickling fails
        except (BrokenPipeError, ConnectionError) as e:
            return e
        except (pickle.PicklingError, AttributeError, TypeError) as e:
            raise ValueError("worker_backend='process' builds envs in other processes, so env_fns must be "
                             "picklable (module-level functions or functools.partial); pass env_id instead, "
                             f"or use worker_backend='thread' or 'ray' ({e})") from e
        return None

    def _receive(self, w: int, token: Any) -> list[Any]:
        if isinstance(token, Exception):
            raise token
        return list(self._conns[w].recv())

    def _shutdown(self) -> None:
        for w, (proc, conn) in enumerate(zip(self._procs, self._conns)):
            if proc is None:
                continue
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            conn.close()
            proc.join(timeout=30)
            if proc.is_alive():
                log.warning("env worker %d did not exit within 30 s of close(); killing it", w)
                proc.kill()
                proc.join()
        self._procs = [None] * self.num_workers


class _RayWorker:
    """The body of a Ray env-worker actor."""

    def __init__(self) -> None:
        self.state = _WorkerState()

    def run(self, batch: list[tuple[int, Call]]) -> list[Any]:
        return [self.state.execute(slot, call) for slot, call in batch]

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.state.close_all()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ImportError(RAY_HINT) from e
    return ray


class RayPool(_Batched):
    """`num_workers` Ray actors holding the envs (`ray.init()` is called when Ray is not yet
    initialised: a local cluster, or the one `RAY_ADDRESS` names)."""

    backend = "ray"

    def __init__(self, num_workers: int = 2, retries: int = 1):
        self._ray = _import_ray()
        super().__init__(num_workers, retries)
        if not self._ray.is_initialized():
            log.info("RayPool: ray is not initialised; calling ray.init()")
            self._ray.init(include_dashboard=False)
        self._actor_cls = self._ray.remote(_RayWorker)
        self._actors: list[Any] = [None] * self.num_workers
        for w in range(self.num_workers):
            self._start(w)

    def _start(self, w: int) -> None:
        if self._actors[w] is not None:
            self._ray.kill(self._actors[w], no_restart=True)
        self._actors[w] = self._actor_cls.remote()

    def worker_pids(self) -> list[int]:
        return [int(p) for p in self._ray.get([a.pid.remote() for a in self._actors])]

    def _send(self, w: int, batch: list[tuple[int, Call]]) -> Any:
        return self._actors[w].run.remote(batch)

    def _receive(self, w: int, token: Any) -> list[Any]:
        return list(self._ray.get(token))

    def _shutdown(self) -> None:
        for actor in self._actors:
            if actor is not None:
                try:
                    self._ray.get(actor.close.remote())
                except Exception as e:  # a dead actor has nothing left to close
                    log.warning("closing a ray env worker raised %s", e)
                self._ray.kill(actor, no_restart=True)
        self._actors = [None] * self.num_workers


def make_worker_pool(
    workers: int, backend: str = "thread", responder: Callable[[Sequence[Any]], list[str]] | None = None,
    retries: int = 1,
) -> WorkerPool:
    """`workers=0`: the serial pool (envs in this process); else `backend` with that many workers."""
    check_workers(workers, backend)
    if workers == 0 or backend == "serial":
        return SerialPool(retries=retries, responder=responder)
    if backend == "thread":
        return ThreadPool(workers, retries)
    if backend == "process":
        return ProcessPool(workers, retries)
    return RayPool(workers, retries)


def check_workers(workers: int, backend: str) -> None:
    """Raise on a bad worker count or backend name (before any worker starts)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown env worker backend {backend!r}; choose one of {', '.join(BACKENDS)} "
                         "(Collector(worker_backend=...), --env-worker-backend)")
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: step envs serially in this process), got {workers}")
    if backend == "ray" and workers > 0:
        _import_ray()
