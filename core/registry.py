"""Env registration into gymnasium's registry under the `creditgym/` namespace.

Entry points are strings (`"creditgym.envs.search:SearchEnv"`), so importing core never imports an
env family. Gymnasium warns and overrides on a duplicate id; creditgym is stricter: the same id with
a different entry point raises, the same entry point again (compared as `module:qualname`) is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium

__all__ = ["BUILTIN_ENVS", "describe_env", "entry_point_string", "register", "register_builtin_envs"]

# id -> (entry point, kwargs, one-line description). ENVS.md section 0 is authoritative.
BUILTIN_ENVS: dict[str, tuple[str, dict[str, Any], str]] = {
    "creditgym/Search-v0": ("creditgym.envs.search:SearchEnv", {}, "Search-R1 multi-hop QA over a BM25 corpus"),
    "creditgym/SearchEasy-v0": (
        "creditgym.envs.search:SearchEnv",
        {"hops": (1, 1), "distractors": 0},
        "one-hop search QA without distractors (the quickstart env)",
    ),
    "creditgym/SelfSearch-v0": ("creditgym.envs.selfsearch:SelfSearchEnv", {}, "SSRL: the policy writes its own search results"),
    "creditgym/SimSearch-v0": ("creditgym.envs.selfsearch:SimSearchEnv", {}, "ZeroSearch: a simulator plays the search engine"),
    "creditgym/Tools-v0": ("creditgym.envs.tools:ToolsEnv", {}, "tool calling with JSON-schema tools"),
    "creditgym/ToolsPython-v0": (
        "creditgym.envs.tools:ToolsEnv",
        {"task_types": ("arith", "table"), "tools": ("python",), "reward": "retool"},
        "ReTool-style tasks solved with a sandboxed Python executor",
    ),
    "creditgym/Device-v0": ("creditgym.envs.device:DeviceEnv", {}, "simulated phone control with AndroidWorld-style actions"),
    "creditgym/RedTeam-v0": ("creditgym.envs.redteam:RedTeamEnv", {"role": "attacker"}, "attacker vs a scripted victim guarding a canary"),
    "creditgym/RedTeamDefender-v0": (
        "creditgym.envs.redteam:RedTeamEnv",
        {"role": "defender", "benign_prob": 0.5, "attacker": "scripted"},
        "defender vs a scripted attacker, half benign users",
    ),
    "creditgym/RedTeamSelfPlay-v0": (
        "creditgym.envs.redteam:RedTeamSelfPlayEnv",
        {"benign_prob": 0.0},
        "two-player attacker vs defender self-play",
    ),
}

_DESCRIPTIONS: dict[str, str] = {}


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
    import inspect

    if isinstance(a, str) or isinstance(b, str) or a is None or b is None:
        return False
    try:
        fa, fb = inspect.getsourcefile(a), inspect.getsourcefile(b)
    except TypeError:
        return False
    from pathlib import Path

    return fa is not None and fb is not None and Path(fa).resolve() == Path(fb).resolve() and a.__qualname__ == b.__qualname__


def register(
    id: str,
    entry_point: str | Callable[..., Any],
    kwargs: dict[str, Any] | None = None,
    description: str = "",
    max_episode_steps: int | None = None,
    **spec_kwargs: Any,
) -> None:
    """Register an env id with gymnasium (no TimeLimit: TextEnv owns the turn budget).

    Raises ValueError when `id` is taken by a different entry point or kwargs; re-registering the
    same entry point is a no-op, so a module can be imported twice.
    """
    ep = entry_point_string(entry_point)
    existing = gymnasium.registry.get(id)
    if existing is not None:
        same_ep = entry_point_string(existing.entry_point) == ep or _same_source(existing.entry_point, entry_point)
        same = same_ep and dict(existing.kwargs) == dict(kwargs or {})
        if same:
            return
        raise ValueError(
            f"env id {id!r} is already registered with entry point {entry_point_string(existing.entry_point)!r} "
            f"and kwargs {dict(existing.kwargs)!r}; pick another id (e.g. bump the version suffix)"
        )
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


def describe_env(env_id: str) -> str:
    """The one-line description given at registration ('' when none)."""
    return _DESCRIPTIONS.get(env_id, "")


def register_builtin_envs() -> None:
    """Register every built-in env id whose family module is installed (called on `import creditgym`).

    Only the family's module spec is looked up, the family itself is imported by `gymnasium.make`."""
    import importlib.util

    for env_id, (ep, kwargs, desc) in BUILTIN_ENVS.items():
        module = ep.split(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            register(env_id, ep, kwargs=kwargs, description=desc)
