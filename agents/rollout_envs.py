"""The Collector's env pool: envs built on demand (one free list per constructor kwargs) or from
fixed constructors, trainer attributes forwarded to every env, responders attached. The envs
themselves live in a `WorkerPool` (agents/env_workers.py): in this process (serial, the default),
stepped from threads, or in worker processes or Ray actors."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium

from creditgym.agents.env_workers import EnvHandle, WorkerPool, check_workers, make_worker_pool

__all__ = ["EnvPool"]


class EnvPool:
    """`acquire(kwargs)` hands out a free env handle (or None when `max_concurrent` envs are busy);
    `release(key, handle)` returns it. `env_fns` fixes the envs (one per slot, kwargs not allowed).
    `workers` / `worker_backend` choose where the envs step (`make_worker_pool`); the workers start
    on the first `acquire` and stop on `close()`."""

    def __init__(
        self,
        env_id: str | None,
        env_fns: Sequence[Callable[[], gymnasium.Env]] | None,
        env_kwargs: Mapping[str, Any],
        max_concurrent: int | None,
        responder: Callable[[Sequence[Any]], list[str]],
        workers: int = 0,
        worker_backend: str = "thread",
    ):
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1 or None, got {max_concurrent}")
        check_workers(workers, worker_backend)
        self.env_id = env_id
        self.env_fns = list(env_fns) if env_fns is not None else None
        self.env_kwargs = dict(env_kwargs)
        self.max_concurrent = max_concurrent
        self.responder = responder
        self.num_workers, self.worker_backend = int(workers), worker_backend
        self.attrs: dict[str, Any] = {}
        self.busy = 0
        self._workers: WorkerPool | None = None
        self._free: dict[str, list[EnvHandle]] = {}
        self._fn_envs: list[EnvHandle | None] = [None] * len(self.env_fns or [])

    @property
    def workers(self) -> WorkerPool:
        if self._workers is None:
            self._workers = make_worker_pool(self.num_workers, self.worker_backend, self.responder)
            for name, value in self.attrs.items():
                self._workers.set_attr(name, value)
        return self._workers

    @property
    def envs(self) -> list[gymnasium.Env]:
        """The env objects living in this process (serial and thread workers; empty for remote ones)."""
        if self._workers is None:
            return []
        return [e for h in self._workers.handles if (e := self._workers.local_env(h)) is not None]

    def set_attr(self, name: str, value: Any) -> None:
        self.attrs[name] = value
        if self._workers is not None:
            self._workers.set_attr(name, value)

    def acquire(self, kwargs: Mapping[str, Any]) -> tuple[str, EnvHandle] | None:
        got = self._acquire(kwargs)
        if got is not None:
            self.busy += 1
        return got

    def release(self, key: str, env: EnvHandle) -> None:
        self.busy -= 1
        self._free.setdefault(key, []).append(env)

    def _acquire(self, kwargs: Mapping[str, Any]) -> tuple[str, EnvHandle] | None:
        if self.env_fns is not None:
            if kwargs:
                raise ValueError("collect: TaskSpec.env_kwargs need env_id (env_fns build fixed envs)")
            for i, env in enumerate(self._fn_envs):
                if env is None:
                    self._fn_envs[i] = self.workers.make(None, {}, self.env_fns[i])
                    return str(i), self._fn_envs[i]  # type: ignore[return-value]
                if self._free.get(str(i)):
                    return str(i), self._free[str(i)].pop()
            return None
        key = repr(sorted(kwargs.items()))
        free = self._free.setdefault(key, [])
        if free:
            return key, free.pop()
        if self.max_concurrent is not None and self.busy >= self.max_concurrent:
            return None
        assert self.env_id is not None
        return key, self.workers.make(gymnasium.spec(self.env_id), {**self.env_kwargs, **kwargs})

    def close(self) -> None:
        if self._workers is not None:
            self._workers.close()
            self._workers = None
        self._free.clear()
        self._fn_envs = [None] * len(self.env_fns or [])
