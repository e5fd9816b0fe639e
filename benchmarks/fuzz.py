"""Fuzz every registered env with hostile actions and near misses of its grammar (docs/reliability.md).

`fuzz_env(env_id, n_actions)` steps one env with a seeded mix of actions: well-formed ones (the env's
`_valid_actions()` and the family's scripted expert, so episodes reach deep states), near misses of
those and of `_fuzz_actions()`, and hostile strings (benchmarks/hostile.py). Each step runs under a
watchdog; the row counts hangs, exceptions, bad outputs (non-str or non-UTF-8 observation, over the
observation space's length, non-finite reward, no `state_key`), the largest observation and the
resident memory growth. `fuzz_collector` runs `Collector.collect()` with a policy that emits the same
mix, which must never raise.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import random
import resource
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium
import numpy as np

import creditgym  # noqa: F401  (registers the creditgym/ ids)
from creditgym.agents import ByteTokenizer
from creditgym.agents.base import Context, Generation, Sampling
from creditgym.agents.rollout import Collector
from creditgym.benchmarks.hostile import hostile_string, near_miss
from creditgym.registry import scripted_functions

__all__ = ["FuzzRow", "fuzz_collector", "fuzz_env", "registered_env_ids"]

log = logging.getLogger(__name__)

MAX_FAILURE_SAMPLES = 5


def registered_env_ids(prefix: str = "creditgym/") -> list[str]:
    """Every id in gymnasium's registry under `prefix` (new envs are covered without editing this file)."""
    return sorted(i for i in gymnasium.registry if i.startswith(prefix))


@dataclass
class FuzzRow:
    """One env's fuzz result. `failed` = hangs + exceptions + bad outputs (+1 if memory grew past the cap)."""

    env_id: str
    tried: int = 0
    hangs: int = 0
    exceptions: int = 0
    bad_outputs: int = 0
    invalid: int = 0
    episodes: int = 0
    max_obs_chars: int = 0
    max_step_s: float = 0.0
    rss_growth_mb: float = 0.0
    memory_capped: bool = False
    raise_mode: bool = False
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.hangs + self.exceptions + self.bad_outputs + int(self.memory_capped)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed}


class StepHang(BaseException):  # BaseException: an env's `except Exception` must not swallow it
    """Raised by the watchdog inside a step that ran past its wall-clock limit."""


@contextlib.contextmanager
def watchdog(limit_s: float) -> Iterator[None]:
    """Interrupt the block with StepHang after `limit_s` (SIGALRM; in the main thread only, elsewhere
    the caller's timing still counts a slow step as a hang after the fact)."""
    if threading.current_thread() is not threading.main_thread() or limit_s <= 0:
        yield
        return

    def _fire(signum: int, frame: Any) -> None:
        raise StepHang(f"step ran past {limit_s} s")

    old = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), else its peak (getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_env(env_id: str, **kwargs: Any) -> tuple[gymnasium.Env, bool]:
    """`gymnasium.make(env_id)` with `on_internal_error="raise"` where the env takes it (so bugs that the
    env would turn into an error observation still surface here); returns (env, raise_mode)."""
    spec = gymnasium.registry[env_id]
    cls = spec.entry_point
    if isinstance(cls, str):
        mod, _, name = cls.partition(":")
        cls = getattr(__import__(mod, fromlist=[name]), name)
    takes = any(
        "on_internal_error" in inspect.signature(k.__init__).parameters for k in getattr(cls, "__mro__", ()) if "__init__" in vars(k)
    )
    if takes:
        try:
            return gymnasium.make(env_id, on_internal_error="raise", **kwargs), True
        except TypeError:
            log.warning("%s: on_internal_error='raise' was refused; fuzzing with the default", env_id)
    return gymnasium.make(env_id, **kwargs), False


def _sample_failure(row: FuzzRow, kind: str, action: str, detail: str) -> None:
    if len(row.failures) < MAX_FAILURE_SAMPLES:
        row.failures.append({"kind": kind, "action": repr(action[:200]), "detail": detail[-2000:]})


class _ActionSource:
    """The seeded action mix for one env: 15% valid, 10% expert, 35% near miss, 10% the env's own fuzz
    pool, 30% hostile strings."""

    def __init__(self, env: gymnasium.Env, env_id: str, rng: random.Random):
        self.u, self.rng = env.unwrapped, rng
        self.np_rng = np.random.default_rng(rng.randrange(2**32))
        self.fuzz_pool = self._call("_fuzz_actions")
        try:
            self.experts: dict[str | None, Callable[..., str]] = {None: scripted_functions(env_id)[0]}
        except KeyError:
            self.experts = {}
        self.env_id = env_id

    def _call(self, hook: str) -> list[str]:
        fn = getattr(self.u, hook, None)
        try:
            return [a for a in fn() if isinstance(a, str)] if callable(fn) else []
        except Exception:  # a hook that cannot run in this state gives no seeds, it is not a step failure
            return []

    def expert(self, ctx: Context) -> str | None:
        role = ctx.role if ctx.role != "agent" else None
        if role not in self.experts:
            try:
                self.experts[role] = scripted_functions(self.env_id, role)[0]
            except KeyError:
                return None
        try:
            return self.experts[role](ctx, self.np_rng)
        except Exception:  # the expert is not under test; it may not follow a fuzzed history
            return None

    def next(self, ctx: Context) -> str:
        r = self.rng.random()
        valid = self._call("_valid_actions")
        if r < 0.15 and valid:
            return self.rng.choice(valid)
        if r < 0.25:
            a = self.expert(ctx)
            if a is not None:
                return a
        if r < 0.6:
            seeds = valid + self.fuzz_pool
            a = self.expert(ctx) if self.rng.random() < 0.3 else None
            return near_miss(self.rng, [*seeds, a] if a is not None else seeds)
        if r < 0.7 and self.fuzz_pool:
            return self.rng.choice(self.fuzz_pool)
        return hostile_string(self.rng)


def _check_step(row: FuzzRow, env: gymnasium.Env, action: str, out: tuple) -> None:
    obs, reward, _term, _trunc, info = out
    problems = []
    if not isinstance(obs, str):
        problems.append(f"observation is {type(obs).__name__}, not str")
    else:
        row.max_obs_chars = max(row.max_obs_chars, len(obs))
        cap = getattr(env.observation_space, "max_length", None)
        if cap is not None and len(obs) > cap:
            problems.append(f"observation has {len(obs)} chars, over the observation space's {cap}")
        try:
            obs.encode("utf-8")
        except UnicodeEncodeError as e:
            problems.append(f"observation is not UTF-8 encodable ({e})")
    if not isinstance(reward, (int, float)) or not math.isfinite(float(reward)):
        problems.append(f"reward {reward!r} is not a finite number")
    if not isinstance(info, dict) or "state_key" not in info:
        problems.append("info has no state_key")
    if problems:
        row.bad_outputs += 1
        _sample_failure(row, "bad_output", action, "; ".join(problems))


def _reset(env: gymnasium.Env, row: FuzzRow, seed: int) -> tuple[Context, dict[str, Context], dict[str, Any]]:
    obs, info = env.reset(seed=seed)
    row.episodes += 1
    role = info.get("role") if isinstance(info.get("role"), str) else None
    two_player = bool(env.unwrapped.metadata.get("two_player"))
    ctx = Context(obs_texts=[] if two_player else [obs], role=role or "agent", env_id=row.env_id)
    contexts = {ctx.role: ctx}
    if two_player:
        ctx.obs_texts.append(obs)
    return ctx, contexts, info


def fuzz_env(
    env_id: str,
    n_actions: int = 10_000,
    seed: int = 0,
    hang_s: float = 5.0,
    max_rss_growth_mb: float = 512.0,
    env_kwargs: dict[str, Any] | None = None,
) -> FuzzRow:
    """Step `env_id` with `n_actions` fuzzed actions (resetting on termination); see the module doc."""
    rng = random.Random(f"{env_id}/{seed}")
    env, raise_mode = make_env(env_id, **(env_kwargs or {}))
    row = FuzzRow(env_id=env_id, raise_mode=raise_mode)
    source = _ActionSource(env, env_id, rng)
    two_player = bool(env.unwrapped.metadata.get("two_player"))
    ctx, contexts, info = _reset(env, row, rng.randrange(2**31))
    t_start, rss_start = time.perf_counter(), None
    for i in range(n_actions):
        if i == max(1, n_actions // 10):
            rss_start = rss_mb()  # after warm-up: caches and lazy imports are filled by now
        action = source.next(ctx)
        row.tried += 1
        t0 = time.perf_counter()
        try:
            with watchdog(hang_s):
                out = env.step(action)
        except StepHang:
            out = None
            row.hangs += 1
            _sample_failure(row, "hang", action, f"step ran past {hang_s} s")
        except Exception as e:  # the point of a fuzz: any exception from step is a finding
            out = None
            row.exceptions += 1
            _sample_failure(row, "exception", action, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        dt = time.perf_counter() - t0
        row.max_step_s = max(row.max_step_s, dt)
        if out is not None and dt > hang_s:
            row.hangs += 1
            _sample_failure(row, "hang", action, f"step took {dt:.1f} s (limit {hang_s} s)")
        if out is None:  # the env may be in any state after a failure: start over with a fresh one
            env.close()
            env, _ = make_env(env_id, **(env_kwargs or {}))
            source.u = env.unwrapped
            ctx, contexts, info = _reset(env, row, rng.randrange(2**31))
            continue
        _check_step(row, env, action, out)
        obs, _, term, trunc, info = out
        row.invalid += bool(isinstance(info, dict) and info.get("invalid"))
        ctx.action_texts.append(action)
        if term or trunc:
            ctx, contexts, info = _reset(env, row, rng.randrange(2**31))
        elif two_player and isinstance(info.get("role"), str):
            ctx = contexts.setdefault(info["role"], Context(role=info["role"], env_id=env_id))
            ctx.obs_texts.append(obs)
        else:
            ctx.obs_texts.append(obs)
    row.seconds = time.perf_counter() - t_start
    if rss_start is not None:
        row.rss_growth_mb = max(0.0, rss_mb() - rss_start)
        row.memory_capped = row.rss_growth_mb > max_rss_growth_mb
    env.close()
    return row


class FuzzPolicy:
    """A Policy (agents/base.py protocol) that writes the fuzz mix: hostile strings, near misses of the
    env's well-formed actions, and well-formed actions from the family's random baseline."""

    def __init__(self, env_id: str, seed: int = 0):
        self.tokenizer = ByteTokenizer()
        self.rng = random.Random(f"collector/{env_id}/{seed}")
        self.np_rng = np.random.default_rng(seed)
        self.env_id = env_id

    def _well_formed(self, ctx: Context) -> str:
        try:
            return scripted_functions(self.env_id, ctx.role if ctx.role != "agent" else None)[1](ctx, self.np_rng)
        except Exception:  # no baseline for this env or role: the hostile mix alone
            return hostile_string(self.rng)

    def generate(self, contexts: list[Context], sampling: Sampling) -> list[Generation]:
        out = []
        for ctx in contexts:
            r = self.rng.random()
            good = self._well_formed(ctx)
            text = good if r < 0.3 else near_miss(self.rng, [good]) if r < 0.7 else hostile_string(self.rng)[:4096]
            ids = self.tokenizer.encode(text, add_special_tokens=False) or self.tokenizer.encode(" ")
            out.append(Generation(tuple(ids), (0.0,) * len(ids), text, "stop"))
        return out

    def logprobs(self, ids_BT: Any, attention_mask_BT: Any, temperature: float = 1.0, grad: bool = False) -> Any:
        import torch

        return torch.zeros(ids_BT.shape, dtype=torch.float32)


def fuzz_collector(env_id: str, num_groups: int = 4, group_size: int = 2, seed: int = 0) -> dict[str, Any]:
    """Run `Collector.collect()` with FuzzPolicy; returns {"env_id", "episodes", "ok", "detail"}."""
    try:
        # a byte-level tokenizer makes long prompts: give the context room, the budget is not under test
        col = Collector(FuzzPolicy(env_id, seed), env_id, group_size=group_size, max_context_tokens=1 << 16)
        episodes = col.collect(num_groups=num_groups, seed=seed)
    except Exception as e:  # the finding this check exists for
        return {"env_id": env_id, "episodes": 0, "ok": False, "detail": f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}"}
    return {"env_id": env_id, "episodes": len(episodes), "ok": True, "detail": ""}
