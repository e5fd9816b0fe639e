"""Env registration into gymnasium's registry under the `creditgym/` namespace.

One `register(...)` call per env id gives gymnasium the entry point and default kwargs, and creditgym
the id's description, scripted expert and random baseline (`ActionFn`: pure functions of the env's
text history) and difficulty presets. Each built-in family calls it in its own `envs/<family>/__init__.py`;
`import creditgym` imports the families named in `BUILTIN_FAMILIES` (by name: core imports no env
module at import time of its own). Gymnasium warns and overrides on a duplicate id; creditgym is
stricter: the same id with a different entry point raises, the same entry point again (compared as
`module:qualname`) is a no-op.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import gymnasium
import numpy as np

__all__ = [
    "BUILTIN_FAMILIES",
    "ActionFn",
    "History",
    "describe_env",
    "difficulty_presets",
    "entry_point_string",
    "register",
    "register_builtin_envs",
    "register_scripted",
    "scripted_functions",
]

# The built-in env families, each registering its ids on import (ENVS.md section 0).
BUILTIN_FAMILIES = ("search", "selfsearch", "tools", "device", "redteam")


class History(Protocol):
    """What a scripted action function reads: the raw env observations (reset observation first),
    the actions so far and whose turn it is, exactly as the env saw them (agents' `Context` is one)."""

    @property
    def obs_texts(self) -> Sequence[str]: ...
    @property
    def action_texts(self) -> Sequence[str]: ...
    @property
    def role(self) -> str: ...


ActionFn = Callable[[Any, np.random.Generator], str]
"""A scripted expert or random baseline: `(history, rng) -> action text`, the history a `History`
(typed `Any` here so that functions written for agents' `Context` register too)."""

_DESCRIPTIONS: dict[str, str] = {}
_DIFFICULTIES: dict[str, dict[str, dict[str, Any]]] = {}
# (env id, role or None) -> (expert, random)
_SCRIPTED: dict[tuple[str, str | None], tuple[ActionFn, ActionFn]] = {}


def entry_point_string(entry_point: str | Callable[..., Any] | None) -> str:
    """Canonical `module:qualname` form of an entry point (a string is returned as is)."""
    if entry_point is None:
        return ""
    if isinstance(entry_point, str):
        return entry_point
    return f"{entry_point.__module__}:{entry_point.__qualname__}"


def _same_source(a: Any, b: Any) -> bool:
    """Two classes with the same qualname defined in the same file: a file imported twice under two
    module names (e.g. by a test and by `creditgym check file.py:ID`) registers the same env."""
    if isinstance(a, str) or isinstance(b, str) or a is None or b is None:
        return False
    try:
        fa, fb = inspect.getsourcefile(a), inspect.getsourcefile(b)
    except TypeError:
        return False
    return fa is not None and fb is not None and Path(fa).resolve() == Path(fb).resolve() and a.__qualname__ == b.__qualname__


def register(
    id: str,
    entry_point: str | Callable[..., Any],
    kwargs: dict[str, Any] | None = None,
    description: str = "",
    expert: ActionFn | None = None,
    random: ActionFn | None = None,
    difficulties: dict[str, dict[str, Any]] | None = None,
    max_episode_steps: int | None = None,
    **spec_kwargs: Any,
) -> None:
    """Register an env id with gymnasium (no TimeLimit: TextEnv owns the turn budget).

    `expert` / `random`: the id's scripted expert and random baseline (both or neither), what
    `ScriptedPolicy.for_env` / `RandomPolicy.for_env` play; `difficulties`: label -> env kwargs, what
    `difficulty_presets` returns. Raises ValueError when `id` is taken by a different entry point or
    kwargs; re-registering the same entry point is a no-op, so a module can be imported twice.
    """
    if (expert is None) != (random is None):
        raise ValueError(f"register({id!r}): give both expert= and random= (a random well-formed action), or neither")
    ep = entry_point_string(entry_point)
    existing = gymnasium.registry.get(id)
    if existing is not None:
        same_ep = entry_point_string(existing.entry_point) == ep or _same_source(existing.entry_point, entry_point)
        if not (same_ep and dict(existing.kwargs) == dict(kwargs or {})):
            raise ValueError(
                f"env id {id!r} is already registered with entry point {entry_point_string(existing.entry_point)!r} "
                f"and kwargs {dict(existing.kwargs)!r}; pick another id (e.g. bump the version suffix)"
            )
    else:
        gymnasium.register(
            id=id,
            entry_point=ep if isinstance(entry_point, str) else entry_point,
            kwargs=dict(kwargs or {}),
            max_episode_steps=max_episode_steps,
            disable_env_checker=True,
            **spec_kwargs,
        )
    if description:
        _DESCRIPTIONS[id] = description
    if expert is not None and random is not None:
        register_scripted(id, expert, random)
    if difficulties:
        _DIFFICULTIES[id] = difficulties


def register_builtin_envs() -> None:
    """Import every built-in family in `BUILTIN_FAMILIES` (each registers its ids); called on `import creditgym`."""
    for family in BUILTIN_FAMILIES:
        importlib.import_module(f"creditgym.envs.{family}")


def describe_env(env_id: str) -> str:
    """The one-line description given at registration ('' when none)."""
    return _DESCRIPTIONS.get(env_id, "")


def difficulty_presets(env_id: str) -> dict[str, dict[str, Any]]:
    """The difficulty presets of `env_id` (label -> env kwargs, e.g. `{"easy": {"hops": [1, 1]}}`)."""
    if env_id not in _DIFFICULTIES:
        raise ValueError(
            f"no difficulty presets for {env_id}; known: {sorted(_DIFFICULTIES)}. "
            "Pass env kwargs directly, or register the env with difficulties={label: kwargs}"
        )
    return {label: dict(kw) for label, kw in _DIFFICULTIES[env_id].items()}


def register_scripted(env_id: str, expert: ActionFn, random: ActionFn, role: str | None = None) -> None:
    """Register the scripted expert and random baseline of `env_id` (and `role`, for two-player envs),
    for an env registered without them."""
    _SCRIPTED[(env_id, role)] = (expert, random)


def scripted_functions(env_id: str, role: str | None = None) -> tuple[ActionFn, ActionFn]:
    """The (expert, random) pair for an env id and role (the role's own pair, else the id's)."""
    for key in ((env_id, role), (env_id, None)):
        if key in _SCRIPTED:
            return _SCRIPTED[key]
    known = sorted({e + (f" (role={r})" if r else "") for e, r in _SCRIPTED})
    raise KeyError(
        f"no scripted policy for env {env_id!r}" + (f" and role {role!r}" if role else "")
        + f"; known: {known}. Register one with creditgym.register(env_id, ..., expert=fn, random=fn) "
        "or creditgym.registry.register_scripted(env_id, expert, random)"
    )
