"""`check_env`: gymnasium's checker plus the text-specific checks of ENVS.md section 7.

Core imports no env family: TextEnv's optional hooks (`_fuzz_actions`, `_valid_actions`,
`get_state` / `set_state`, `max_turns`, `on_internal_error`) are duck-typed through `env.unwrapped`.

Task ids are optional. An env *declares* task ids when it writes TextEnv's `_new_task` hook or puts a
`task_id` key in its reset info; only then does the checker require a non-empty `task_id`, distinct
task ids across seeds, and `reset(options={"task_id": ...})` reproducing the episode. Every env must
be deterministic in its seed and replay by seed (unless `metadata["deterministic"]` is False).
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np

from creditgym.spaces import Text
from creditgym.text import normalize_answer

__all__ = ["CheckReport", "CheckResult", "check_env"]

log = logging.getLogger(__name__)

_GENERIC_FUZZ = (
    "",
    " ",
    "\n\t  \n",
    "x" * 1_000_000,
    "\x00\x01\x02\x1b[31m",
    "abc\x00def",
    "\ud800\udfff lone surrogates \udc00",
    "héllo wörld 中文 🙂 \u202e",
    '{"a": [1, 2, {"b": null}]}',
    "{{{{{{",
    '{"unterminated": "',
    "<answer></answer>",
    "<<<>>>",
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    message: str = ""
    warning: bool = False


@dataclass
class CheckReport:
    env_id: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]

    def __str__(self) -> str:
        lines = [f"check_env({self.env_id}): {'PASS' if self.ok else 'FAIL'}"]
        for r in self.results:
            mark = "ok  " if r.ok and not r.warning else ("warn" if r.ok else "FAIL")
            lines.append(f"  [{mark}] {r.name}" + (f": {r.message}" if r.message else ""))
        return "\n".join(lines)


class _Fail(Exception):
    pass


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise _Fail(msg)


def _contains_token_seq(haystack: str, needle: str) -> bool:
    h, n = normalize_answer(haystack).split(), normalize_answer(needle).split()
    if not n:
        return False
    return any(h[i : i + len(n)] == n for i in range(len(h) - len(n) + 1))


class _Runner:
    """Holds the env and the helpers the individual checks share."""

    def __init__(self, env: gymnasium.Env, n_seeds: int, n_fuzz: int, rng_seed: int = 0):
        self.env = env
        self.u = env.unwrapped
        self.n_seeds = n_seeds
        self.n_fuzz = n_fuzz
        self.rng = np.random.default_rng(rng_seed)
        self.max_turns = int(getattr(self.u, "max_turns", 8))
        self.two_player = False
        self.task_ids = True

    def declares_task_ids(self) -> bool:
        """Whether the env writes TextEnv's `_new_task` hook or reports `task_id` in its reset info."""
        hook = getattr(type(self.u), "_new_task", None)
        if hook is not None and hook is not _base_attr(self.u, "_new_task"):
            return True
        _, info = self.env.reset(seed=0)
        return "task_id" in info

    def actions_for_state(self) -> list[str]:
        valid = getattr(self.u, "_valid_actions", None)
        acts = list(valid()) if callable(valid) else []
        return acts

    def pick_action(self) -> str:
        acts = self.actions_for_state()
        if acts and self.rng.random() < 0.85:
            return acts[int(self.rng.integers(len(acts)))]
        fuzz = getattr(self.u, "_fuzz_actions", None)
        pool = list(fuzz()) if callable(fuzz) else []
        if pool and self.rng.random() < 0.5:
            return pool[int(self.rng.integers(len(pool)))]
        return str(self.env.action_space.sample())

    def rollout(self, seed: int, actions: Sequence[str] | None = None, n: int = 8) -> dict[str, Any]:
        """Run one episode from `seed` with the given actions (or picked ones); record everything."""
        obs, info = self.env.reset(seed=seed)
        rec: dict[str, Any] = {"reset": (obs, info), "steps": [], "actions": []}
        todo = list(actions) if actions is not None else None
        for i in range(n if todo is None else len(todo)):
            a = todo[i] if todo is not None else self.pick_action()
            out = self.env.step(a)
            rec["actions"].append(a)
            rec["steps"].append(out)
            if out[2] or out[3]:
                break
        return rec


def _same_step(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[3] == b[3] and a[4].get("state_key") == b[4].get("state_key")


def _check_spaces(r: _Runner) -> None:
    _require(isinstance(r.env.observation_space, Text), "observation_space must be creditgym.spaces.Text")
    _require(isinstance(r.env.action_space, Text), "action_space must be creditgym.spaces.Text")
    _require(r.env.observation_space.contains(""), "observation_space must contain '' (the empty final observation)")
    for s in range(r.n_seeds):
        rec = r.rollout(s)
        for obs in [rec["reset"][0]] + [st[0] for st in rec["steps"]]:
            _require(r.env.observation_space.contains(obs), f"seed {s}: observation not in observation_space: {obs[:80]!r}")


def _check_info(r: _Runner) -> None:
    for s in range(r.n_seeds):
        rec = r.rollout(s, n=r.max_turns * 2 + 2)
        obs, info = rec["reset"]
        if r.task_ids:
            _require(bool(info.get("task_id")), f"seed {s}: reset info lacks a non-empty 'task_id'")
        _require(bool(info.get("state_key")), f"seed {s}: reset info lacks a non-empty 'state_key'")
        roles = [info.get("role")]
        for i, (o, rew, term, trunc, inf) in enumerate(rec["steps"]):
            _require("state_key" in inf, f"seed {s} step {i}: info lacks 'state_key'")
            _require(isinstance(inf.get("invalid"), bool), f"seed {s} step {i}: info['invalid'] must be a bool")
            _require("turn" in inf, f"seed {s} step {i}: info lacks 'turn'")
            _require(isinstance(rew, (int, float)) and np.isfinite(rew), f"seed {s} step {i}: reward {rew!r} is not finite")
            roles.append(inf.get("role"))
        last = rec["steps"][-1]
        _require(last[2] or last[3], f"seed {s}: episode did not end within {len(rec['steps'])} steps (max_turns={r.max_turns})")
        comps = last[4].get("reward_components")
        _require(isinstance(comps, dict), f"seed {s}: the ending step's info lacks 'reward_components'")
        _require(comps.get("success") in (0, 1, 0.0, 1.0), f"seed {s}: reward_components['success'] must be 0 or 1, got {comps.get('success')!r}")
        rewards = [st[1] for st in rec["steps"]]
        final = last[4].get("final_rewards")
        if isinstance(final, dict):
            r.two_player = True
            by_role = last[4].get("reward_components_by_role", {})
            for role, fr in final.items():
                own = sum(rw for rw, actor in zip(rewards, roles[:-1]) if actor == role)
                got = by_role.get(role, {}).get("return")
                _require(got is not None and abs(got - (own + fr)) < 1e-6,
                         f"seed {s}: role {role!r} return {got!r} != its step rewards {own} + final reward {fr}")
        else:
            _require(abs(comps.get("return", np.nan) - sum(rewards)) < 1e-6,
                     f"seed {s}: reward_components['return']={comps.get('return')!r} != summed rewards {sum(rewards)}")


def _check_determinism(r: _Runner) -> None:
    ids = set()
    for s in range(r.n_seeds):
        o1, i1 = r.env.reset(seed=s)
        o2, i2 = r.env.reset(seed=s)
        _require(o1 == o2, f"seed {s}: two resets give different observations")
        for k in ("task_id", "gold", "state_key"):
            _require(i1.get(k) == i2.get(k), f"seed {s}: two resets give different info[{k!r}]")
        ids.add(i1.get("task_id"))
        rec = r.rollout(s)
        again = r.rollout(s, actions=rec["actions"])
        _require(rec["reset"][0] == again["reset"][0], f"seed {s}: reset observation differs between runs")
        for i, (a, b) in enumerate(zip(rec["steps"], again["steps"])):
            _require(_same_step(a, b), f"seed {s} step {i}: the same actions gave a different observation/reward/flags/state_key")
    if r.n_seeds >= 2 and r.task_ids:
        _require(len(ids) >= 2, f"{r.n_seeds} seeds gave only {len(ids)} task_id(s); seeds must index different tasks")


def _check_task_id(r: _Runner) -> None:
    for s in range(min(3, r.n_seeds)):
        obs, info = r.env.reset(seed=s)
        obs2, info2 = r.env.reset(seed=1000 + s, options={"task_id": info["task_id"]})
        _require(obs == obs2, f"seed {s}: reset(options={{'task_id': ...}}) does not reproduce the observation")
        _require(info2.get("task_id") == info["task_id"], f"seed {s}: reset by task_id reports another task_id")


def _check_replay(r: _Runner) -> None:
    for s in range(min(3, r.n_seeds)):
        rec = r.rollout(s, n=8)
        k = int(r.rng.integers(0, len(rec["actions"]) + 1))
        ref = rec["steps"][k - 1] if k else (rec["reset"][0], 0.0, False, False, rec["reset"][1])
        again = r.rollout(s, actions=rec["actions"][:k])
        got = again["steps"][-1] if k else (again["reset"][0], 0.0, False, False, again["reset"][1])
        _require(got[0] == ref[0] and got[4].get("state_key") == ref[4].get("state_key"),
                 f"seed {s}: reset + {k} replayed actions does not reach the same observation/state_key")
        cls = type(r.u)
        overridden = any(getattr(cls, m, None) is not None and getattr(cls, m) is not _base_attr(r.u, m) for m in ("get_state", "set_state"))
        if overridden and hasattr(r.u, "get_state"):
            r.env.reset(seed=s)
            cut = max(0, min(k, len(rec["actions"]) - 1))
            for a in rec["actions"][:cut]:
                r.env.step(a)
            state = copy.deepcopy(r.u.get_state())
            tail_live = [r.env.step(a) for a in rec["actions"][cut:]]
            r.u.set_state(state)
            tail_restored = [r.env.step(a) for a in rec["actions"][cut:]]
            for i, (a, b) in enumerate(zip(tail_live, tail_restored)):
                _require(_same_step(a, b), f"seed {s}: after set_state(get_state()) step {cut + i} differs from the live run")


def _base_attr(u: Any, name: str) -> Any:
    """The attribute as defined by the most basic class in the MRO that defines it (TextEnv's default)."""
    for klass in reversed(type(u).__mro__):
        if name in vars(klass):
            return vars(klass)[name]
    return None


def _check_fuzz(r: _Runner) -> None:
    fuzz = getattr(r.u, "_fuzz_actions", None)
    pool = list(_GENERIC_FUZZ) + (list(fuzz()) if callable(fuzz) else [])
    pool += [str(r.env.action_space.sample()) for _ in range(max(0, r.n_fuzz - len(pool)))]
    r.env.reset(seed=0)
    for a in pool:
        try:
            obs, _, term, trunc, info = r.env.step(a)
        except Exception as e:  # the point of a fuzz test: report any exception as a failure
            raise _Fail(f"step({a[:40]!r}) raised {type(e).__name__}: {e}") from e
        _require(isinstance(obs, str), f"step({a[:40]!r}) returned a non-str observation")
        if info.get("invalid"):
            _require(obs.strip() != "", f"step({a[:40]!r}) is invalid but its observation is empty (say what is wrong)")
        if term or trunc:
            r.env.reset(seed=0)
    # max_turns invalid actions end in truncation with reward_components
    obs, info = r.env.reset(seed=1)
    out: tuple = ()
    for i in range(r.max_turns):
        out = r.env.step("\x00 not an action \x00")
        if out[2] or out[3]:
            break
    _require(bool(out) and out[3] and not out[2], f"{r.max_turns} invalid actions must end the episode with truncated=True")
    _require("reward_components" in out[4], "the truncating step's info lacks 'reward_components'")


def _check_gold_leak(r: _Runner) -> list[str]:
    warns = []
    for s in range(r.n_seeds):
        obs, info = r.env.reset(seed=s)
        golds = [g for g in info.get("gold", []) if isinstance(g, str)]
        texts = [obs]
        for _ in range(2):
            o, _, term, trunc, inf = r.env.step("\x00 not an action")
            if inf.get("invalid"):
                texts.append(o)
            if term or trunc:
                break
        for g in golds:
            for t in texts:
                if _contains_token_seq(t, g):
                    if len(g.strip()) < 3:
                        warns.append(f"seed {s}: short gold {g!r} appears in an observation (allowed, check it is not a leak)")
                    else:
                        raise _Fail(f"seed {s}: gold answer {g!r} appears in the reset/invalid-action observation")
    return warns


def _check_state_key_changes(r: _Runner) -> list[str]:
    for s in range(r.n_seeds):
        rec = r.rollout(s, n=r.max_turns)
        keys = {rec["reset"][1].get("state_key")} | {st[4].get("state_key") for st in rec["steps"]}
        if len(keys) > 1:
            return []
    return ["state_key never changed over sampled episodes (anchor-state grouping needs it to change)"]


def _check_after_end(r: _Runner) -> None:
    r.env.reset(seed=0)
    for _ in range(r.max_turns + 1):
        out = r.env.step("\x00")
        if out[2] or out[3]:
            break
    try:
        r.env.step("anything")
    except RuntimeError:
        pass
    else:
        raise _Fail("stepping after the episode ended must raise RuntimeError('episode is over: call reset()')")
    r.env.reset(seed=0)


def _check_make(r: _Runner) -> None:
    spec = r.env.spec or getattr(r.u, "spec", None)
    if spec is None:
        return
    e = gymnasium.make(spec.id)
    e.reset(seed=0)
    e.close()
    for mode in ("sync", "async"):  # async copies observations through shared memory
        v = gymnasium.make_vec(spec.id, num_envs=2, vectorization_mode=mode)
        try:
            obs, _ = v.reset(seed=0)
            _require(all(isinstance(o, str) for o in obs), f"make_vec({mode!r}).reset returned non-str observations")
        finally:
            v.close()


def _check_speed(r: _Runner) -> list[str]:
    times = []
    r.env.reset(seed=0)
    for _ in range(20):
        a = r.pick_action()
        t0 = time.perf_counter()
        out = r.env.step(a)
        times.append(time.perf_counter() - t0)
        if out[2] or out[3]:
            r.env.reset(seed=int(r.rng.integers(1000)))
    med = statistics.median(times)
    return [f"median step {med * 1000:.1f} ms (> 50 ms)"] if med > 0.05 else []


def check_env(env: gymnasium.Env | str, n_seeds: int = 5, n_fuzz: int = 64, strict: bool = True, **make_kwargs: Any) -> CheckReport:
    """Run every check on `env` (an instance or a registered id); raise one AssertionError listing
    all failures when `strict`, else return the report."""
    if isinstance(env, str):
        env = gymnasium.make(env, **make_kwargs)
    spec = env.spec or getattr(env.unwrapped, "spec", None)
    report = CheckReport(env_id=spec.id if spec is not None else type(env.unwrapped).__name__)
    r = _Runner(env, n_seeds=n_seeds, n_fuzz=n_fuzz)
    deterministic = bool(env.unwrapped.metadata.get("deterministic", True))
    # bugs must surface as failures here, not as error observations
    saved_on_internal_error = getattr(env.unwrapped, "on_internal_error", None)
    if saved_on_internal_error is not None:
        env.unwrapped.on_internal_error = "raise"
    try:
        _run_checks(env, r, report, deterministic)
    finally:
        if saved_on_internal_error is not None:
            env.unwrapped.on_internal_error = saved_on_internal_error
    if strict and not report.ok:
        raise AssertionError(str(report))
    return report


def _run_checks(env: gymnasium.Env, r: _Runner, report: CheckReport, deterministic: bool) -> None:
    try:
        r.task_ids = r.declares_task_ids()
    except Exception as e:  # reported by the checks below, which reset again
        log.debug("check_env: reset(seed=0) failed while looking for task ids: %s", e)

    def gym_check() -> None:
        import dataclasses

        from gymnasium.envs.registration import EnvSpec
        from gymnasium.utils.env_checker import check_env as gym_check_env

        u = env.unwrapped
        saved = u.spec
        if not deterministic:  # gymnasium reads the flag from the spec; creditgym from metadata
            base = saved if saved is not None else EnvSpec(id=f"{type(u).__name__}-v0", entry_point=type(u))
            u.spec = dataclasses.replace(base, nondeterministic=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gym_check_env(u, skip_render_check=True)
        finally:
            u.spec = saved

    checks: list[tuple[str, Callable[[], Any], bool]] = [
        ("gymnasium.check_env", gym_check, True),
        ("spaces", lambda: _check_spaces(r), True),
        ("info", lambda: _check_info(r), True),
        ("determinism", lambda: _check_determinism(r), deterministic),
        ("reset by task_id", lambda: _check_task_id(r), deterministic and r.task_ids),
        ("replay", lambda: _check_replay(r), deterministic),
        ("fuzz", lambda: _check_fuzz(r), True),
        ("no gold leak", lambda: _check_gold_leak(r), True),
        ("state_key changes", lambda: _check_state_key_changes(r), True),
        ("step after end", lambda: _check_after_end(r), True),
        ("gymnasium.make / make_vec", lambda: _check_make(r), True),
        ("step speed", lambda: _check_speed(r), True),
    ]
    for name, fn, run in checks:
        if not run:
            why = "non-deterministic env" if not deterministic else "the env declares no task ids"
            log.log(logging.INFO if deterministic else logging.WARNING, "check_env: skipping %s (%s)", name, why)
            report.results.append(CheckResult(name, True, f"skipped: {why}", warning=not deterministic))
            continue
        try:
            warns = fn()
        except _Fail as e:
            report.results.append(CheckResult(name, False, str(e)))
            continue
        except Exception as e:  # a crash inside a check is a failure of the env, reported, not raised
            report.results.append(CheckResult(name, False, f"{type(e).__name__}: {e}"))
            continue
        if warns:
            for w in warns:
                log.warning("check_env(%s): %s", report.env_id, w)
            report.results.append(CheckResult(name, True, "; ".join(warns), warning=True))
        else:
            report.results.append(CheckResult(name, True))
