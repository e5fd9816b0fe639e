"""The Collector's env pool: envs built on demand (one free list per constructor kwargs) or from
fixed constructors, trainer attributes forwarded to every env, responders attached."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium

__all__ = ["EnvPool"]


class EnvPool:
    """`acquire(kwargs)` hands out a free env (or None when `max_concurrent` envs are busy);
    `release(key, env)` returns it. `env_fns` fixes the envs (one per slot, kwargs not allowed)."""

    def __init__(
        self,
        env_id: str | None,
        env_fns: Sequence[Callable[[], gymnasium.Env]] | None,
        env_kwargs: Mapping[str, Any],
        max_concurrent: int | None,
        responder: Callable[[Sequence[Any]], list[str]],
    ):
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1 or None, got {max_concurrent}")
        self.env_id = env_id
        self.env_fns = list(env_fns) if env_fns is not None else None
        self.env_kwargs = dict(env_kwargs)
        self.max_concurrent = max_concurrent
        self.responder = responder
        self.envs: list[gymnasium.Env] = []
        self.attrs: dict[str, Any] = {}
        self.busy = 0
        self._free: dict[str, list[gymnasium.Env]] = {}
        self._fn_envs: list[gymnasium.Env | None] = [None] * len(self.env_fns or [])

    def set_attr(self, name: str, value: Any) -> None:
        self.attrs[name] = value
        for env in self.envs:
            setattr(env.unwrapped, name, value)

    def acquire(self, kwargs: Mapping[str, Any]) -> tuple[str, gymnasium.Env] | None:
        got = self._acquire(kwargs)
        if got is not None:
            self.busy += 1
        return got

    def release(self, key: str, env: gymnasium.Env) -> None:
        self.busy -= 1
        self._free.setdefault(key, []).append(env)

    def _acquire(self, kwargs: Mapping[str, Any]) -> tuple[str, gymnasium.Env] | None:
        if self.env_fns is not None:
            if kwargs:
                raise ValueError("collect: TaskSpec.env_kwargs need env_id (env_fns build fixed envs)")
            for i, env in enumerate(self._fn_envs):
                if env is None:
                    self._fn_envs[i] = self._setup(self.env_fns[i]())
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
        return key, self._setup(gymnasium.make(self.env_id, **{**self.env_kwargs, **kwargs}))

    def _setup(self, env: gymnasium.Env) -> gymnasium.Env:
        base = env.unwrapped
        for name, value in self.attrs.items():
            setattr(base, name, value)
        if base.metadata.get("requires_responder"):
            if not hasattr(base, "set_responder"):
                raise TypeError(f"{type(base).__name__} declares requires_responder but has no set_responder(fn)")
            base.set_responder(self.responder)
        self.envs.append(env)
        return env

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs.clear()
        self._free.clear()
        self._fn_envs = [None] * len(self.env_fns or [])
