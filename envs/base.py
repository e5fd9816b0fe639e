"""TextEnv: the base class of every creditgym env, and the types the env families share.

Two ways to write an env (ENVS.md section 1):

1. Plain Gymnasium: override `reset` and `step` yourself and write none of the task hooks. Then
   `super().reset(seed=seed)` seeds `self.np_random` and zeroes TextEnv's counters, nothing else; a
   hand-written `step` may return `self._finish_step(action, Outcome(...), invalid=...,
   state_key=..., components=...)` to get the turn budget, `invalid`/`turn` info and
   `reward_components` (both optional). Such a `step` owns its own totality:
   `self._internal_error_step(action, err)` builds the standard error observation for its `except`.
2. Hooks: write `_new_task`, `_first_obs`, `_parse`, `_apply`, `_state_key`, `_final_components`
   (and optionally `_fuzz_actions`, `_backend_error_obs`) and inherit `reset`/`step`. The inherited
   `step` is total: an unexpected exception becomes an error observation (`on_internal_error`).

TextEnv picks the path in `reset`: a subclass that overrides `reset` and not `_new_task` is plain.

Randomness comes only from `self.np_random`, which is re-seeded from the task id once the task is
chosen, so the same task always replays the same episode for the same actions.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
from gymnasium.utils import seeding

from creditgym.envs.backend_log import BackendLogCache, check_backend_log, fingerprint
from creditgym.spaces import Text

__all__ = [
    "SPLITS",
    "BackendError",
    "Invalid",
    "Outcome",
    "Parsed",
    "Replayed",
    "Task",
    "TextEnv",
    "sanitize_action",
    "split_of_key",
    "task_seed",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "test", "heldout")
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
_BACKEND_LOG_EPISODES = 256
_ON_ERROR = ("observe", "raise")


@dataclass(frozen=True)
class Task:
    """One task of a family. `task_id = "<family>/<split>/<canonical key>"`; `gold` lists accepted
    answers (never shown in observations); `private` holds what only the env may read."""

    task_id: str
    split: str = "train"
    prompt: str = ""
    gold: tuple[str, ...] = ()
    difficulty: Any = 1
    private: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Parsed:
    """A parsed, well-formed action. Families subclass it or use `kind` + `args`."""

    kind: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)
    raw: str = ""


@dataclass(frozen=True)
class Invalid:
    """An action that could not be parsed or is not allowed; `message` becomes the observation and
    should name the problem and show a correct example."""

    message: str


@dataclass
class Outcome:
    """What `_apply` returns: the next observation, the step reward, whether the episode ended, and
    extra info keys (e.g. `tool_results`, `mask_spans`)."""

    obs: str
    reward: float = 0.0
    terminated: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class BackendError(Exception):
    """A real backend failed after its retries. `kind` is short and stable (`timeout`, `connection`,
    `http_503`, `bad_response`, ...); the env turns it into an error observation."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Replayed:
    """The state reached by `TextEnv.replay`: last observation and info, and the step results."""

    obs: str
    info: dict[str, Any]
    rewards: tuple[float, ...]
    terminated: bool
    truncated: bool


def split_of_key(key: str) -> str:
    """The split a canonical task key belongs to: sha256(key) % 10 -> 0-7 train, 8 test, 9 heldout."""
    r = int(hashlib.sha256(key.encode()).hexdigest(), 16) % 10
    return "train" if r < 8 else ("test" if r == 8 else "heldout")


def task_seed(task_id: str) -> int:
    """A 64-bit seed derived from a task id (stable across processes and platforms)."""
    return int(hashlib.sha256(task_id.encode()).hexdigest()[:16], 16)


def sanitize_action(action: Any, max_chars: int) -> tuple[str, bool]:
    """Make any input a safe action string: non-strings become `str(...)`, NUL and lone surrogates
    become U+FFFD (they break UTF-8 request bodies and subprocess argv), cut at `max_chars`."""
    text = action if isinstance(action, str) else str(action)
    clean = _BAD_CHARS.sub("\ufffd", text)[:max_chars]
    return clean, clean != text


def _hook_or(hook: Callable[[], Any], fallback: Any) -> Any:
    """`hook()`, or `fallback` when it raises (used only after an internal error)."""
    try:
        return hook()
    except Exception:
        log.debug("%s failed after an internal error; using %r", getattr(hook, "__name__", hook), fallback, exc_info=True)
        return fallback


class TextEnv(gymnasium.Env[str, str]):
    """Base class: text observations and actions, a turn budget, invalid-action handling, replay."""

    metadata: dict[str, Any] = {  # gymnasium convention; families may override it per instance
        "render_modes": ["ansi"],
        "deterministic": True,
        "obs_role": "user",
        "stop": (),
    }
    role = "agent"
    backend_log_max_bytes: int = 64 * 2**20
    """Total size (JSON bytes) of the backend logs kept for replay; the oldest episodes go first."""

    def __init__(
        self,
        max_turns: int = 8,
        invalid_penalty: float = 0.0,
        max_action_chars: int = 8192,
        max_obs_chars: int = 16384,
        split: str = "train",
        on_backend_error: str = "observe",
        render_mode: str | None = None,
        on_internal_error: str = "observe",
    ):
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if on_backend_error not in _ON_ERROR:
            raise ValueError(f"on_backend_error must be 'observe' or 'raise', got {on_backend_error!r}")
        if on_internal_error not in _ON_ERROR:
            raise ValueError(f"on_internal_error must be 'observe' or 'raise', got {on_internal_error!r}")
        if not np.isfinite(invalid_penalty):
            raise ValueError(f"invalid_penalty must be a finite number, got {invalid_penalty!r}")
        self.max_turns = int(max_turns)
        self.invalid_penalty = float(invalid_penalty)
        self.max_action_chars = int(max_action_chars)
        self.max_obs_chars = int(max_obs_chars)
        self.split = split
        self.on_backend_error = on_backend_error
        self.on_internal_error = on_internal_error
        self.render_mode = render_mode
        self.observation_space = Text(max_length=self.max_obs_chars + 64)
        self.action_space = Text(max_length=self.max_action_chars)
        self.task: Task = Task(task_id="")  # replaced on reset; task_id '' = no episode yet
        self._task_rng: np.random.Generator | None = None
        self._turn = 0
        self._done = True
        self._actions: list[str] | None = None
        self._rewards: list[float] = []
        self._last_obs = ""
        self._reset_seed: int | None = None
        self._reset_options: dict[str, Any] = {}
        self._backend_lru = BackendLogCache(_BACKEND_LOG_EPISODES, self.backend_log_max_bytes)
        self._backend_log: list[list[Any]] = []
        self._replay_log: list[list[Any]] = []
        self._backend_calls = 0
        self._warned_big_log = False
        self._last_state_key = ""

    # ------------------------------------------------------------------ hooks (path 2)
    def _new_task(self, rng: np.random.Generator, options: Mapping[str, Any]) -> Task:
        raise NotImplementedError(
            f"{type(self).__name__}: implement _new_task(rng, options) (and the other hooks) or override reset()"
        )

    def _first_obs(self) -> str:
        raise NotImplementedError(f"{type(self).__name__}: implement _first_obs() or override reset()")

    def _parse(self, action: str) -> Parsed | Invalid:
        raise NotImplementedError(f"{type(self).__name__}: implement _parse(action) or override step()")

    def _apply(self, parsed: Parsed) -> Outcome:
        raise NotImplementedError(f"{type(self).__name__}: implement _apply(parsed) or override step()")

    def _state_key(self) -> str:
        raise NotImplementedError(f"{type(self).__name__}: implement _state_key()")

    def _abstract_state(self) -> str:
        """A coarse key of the current state for pooled credit (`pvd`, docs/credit.md): equal progress,
        not equal text. Called right after the state key is set; default: the state key itself."""
        return self._last_state_key

    def _final_components(self) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__}: implement _final_components() (with a 'success' key)")

    def _truncation_reward(self) -> float:
        """Reward added to the step that exhausts the turn budget without terminating (default 0):
        a terminal term the env also pays on truncation (Tools' answer term, Device's progress credit)."""
        return 0.0

    def _fuzz_actions(self) -> list[str]:
        """Near-miss actions for the checker's fuzz test (family grammar almost right)."""
        return []

    def _valid_actions(self) -> list[str]:
        """A few well-formed actions for the current state; the checker drives episodes with them."""
        return []

    def _backend_error_obs(self, err: BackendError) -> str:
        return f"The backend failed ({err.kind}). Try again or answer with what you know."

    def _internal_error_obs(self, err: Exception) -> str:
        return f"The environment failed internally ({type(err).__name__}). Try again or answer with what you know."

    @classmethod
    def _uses_task_hooks(cls) -> bool:
        """Whether this class writes the task hooks (path 2) rather than its own plain reset."""
        return cls._new_task is not TextEnv._new_task or cls.reset is TextEnv.reset

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Hooks path: draw a task, start the episode, return the first observation and info.

        Plain path (the subclass overrides `reset` and not `_new_task`): seed `np_random` and zero
        the counters, nothing else; the subclass builds its own observation and info, and the
        `("", {})` returned here is a placeholder to ignore.
        """
        super().reset(seed=seed)
        if not self._uses_task_hooks():
            self._start_counters(seed, dict(options or {}))
            return "", {}
        # Tasks are drawn from the seeded generator; the episode's own randomness is re-seeded from
        # the task below, so a reset without a seed continues the task stream rather than the episode's.
        if seed is not None or self._task_rng is None:
            self._task_rng = self.np_random
        opts = dict(options or {})
        if "task_id" in opts and not isinstance(opts["task_id"], str):
            raise ValueError(
                f"options['task_id'] must be a str like the info['task_id'] a reset returns, got "
                f"{type(opts['task_id']).__name__} {opts['task_id']!r}"
            )
        task = self._new_task(self._task_rng, opts)
        self._begin_episode(task, seed, opts)
        obs = self._cut_obs(self._first_obs())
        self._last_obs = obs
        return obs, self._reset_info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._check_running()
        text, sanitized = sanitize_action(action, self.max_action_chars)
        try:
            parsed = self._parse(text)
            if isinstance(parsed, Invalid):
                outcome = Outcome(obs=parsed.message, reward=self.invalid_penalty)
                invalid = True
            else:
                invalid = False
                try:
                    outcome = self._apply(parsed)
                except BackendError as err:
                    if self.on_backend_error == "raise":
                        raise
                    outcome = Outcome(obs=self._backend_error_obs(err), info={"backend_error": err.kind})
            return self._finish_step(text, outcome, invalid=invalid, sanitized=sanitized)
        except Exception as err:
            if self.on_internal_error == "raise" or (isinstance(err, BackendError) and self.on_backend_error == "raise"):
                raise
            return self._internal_error_step(text, err, sanitized=sanitized)

    def render(self) -> str:
        return self._last_obs

    # ------------------------------------------------------------------ helpers for both paths
    def _start_counters(self, seed: int | None, options: dict[str, Any]) -> None:
        """Zero the turn counter, the action/reward record and the backend-call count; remember the
        seed and options for `get_state`. The task and `np_random` are left alone."""
        self._turn = 0
        self._done = False
        self._actions = []
        self._rewards = []
        self._reset_seed = seed
        self._reset_options = {k: v for k, v in options.items() if k != "backend_log"}
        self._replay_log = []
        self._backend_log = []
        self._backend_calls = 0
        self._last_state_key = ""

    def _begin_episode(self, task: Task, seed: int | None, options: Mapping[str, Any]) -> None:
        """Start an episode on `task`: re-seed `np_random` from the task id, zero the counters, load
        the backend response log (from `options["backend_log"]` or the env's LRU)."""
        opts = dict(options)
        given_log = check_backend_log(opts.get("backend_log"))
        self.task = task
        self._np_random, _ = seeding.np_random(task_seed(task.task_id))
        self._start_counters(seed, opts)
        key = (task.task_id, seed)
        self._replay_log = given_log if given_log is not None else self._backend_lru.get(key)

    def _reset_info(self) -> dict[str, Any]:
        self._last_state_key = self._state_key()
        info: dict[str, Any] = {
            "task_id": self.task.task_id,
            "state_key": self._last_state_key,
            "abstract_state": str(self._abstract_state()),
            "turn": 0,
            "turns_left": self.max_turns,
        }
        if self.task.gold:
            info["gold"] = list(self.task.gold)
        return info

    def _check_running(self) -> None:
        if self._done:
            raise RuntimeError("episode is over: call reset()")

    def _finish_step(
        self,
        action: str,
        outcome: Outcome,
        *,
        invalid: bool = False,
        sanitized: bool = False,
        state_key: str | None = None,
        components: Mapping[str, float] | None = None,
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Count the turn, apply the budget, build info (and reward_components at the end).

        `state_key` / `components` given explicitly (plain path) replace the `_state_key()` /
        `_final_components()` hooks, which are then not called. All or nothing: if a hook raises,
        the counters are rolled back before the exception propagates. A step that exhausts the turn
        budget without terminating also gets `_truncation_reward()`.
        """
        if not outcome.terminated and self._turn + 1 >= self.max_turns:
            outcome.reward = float(outcome.reward) + self._truncation_reward()
        return self._finish_step_atomic(action, outcome, invalid, sanitized, state_key, components, False)

    def _finish_step_atomic(
        self,
        action: str,
        outcome: Outcome,
        invalid: bool,
        sanitized: bool,
        state_key: str | None,
        components: Mapping[str, float] | None,
        hooks_may_fail: bool,
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """`_finish_step`'s body, all or nothing: if a hook raises, the counters are rolled back before
        the exception propagates. `hooks_may_fail` (the internal-error path) replaces a failing hook
        by its fallback instead."""

        def hook(fn: Callable[[], Any], fallback: Any) -> Any:
            return _hook_or(fn, fallback) if hooks_may_fail else fn()

        mark = (self._turn, len(self._rewards), None if self._actions is None else len(self._actions))
        try:
            if self._actions is not None:
                self._actions.append(action)
            self._turn += 1
            reward = float(outcome.reward)
            self._rewards.append(reward)
            terminated = bool(outcome.terminated)
            truncated = not terminated and self._turn >= self.max_turns
            info: dict[str, Any] = dict(outcome.info)
            key = str(state_key) if state_key is not None else hook(self._state_key, f"{self._last_state_key}|internal_error")
            info.update(state_key=key, invalid=bool(invalid), turn=self._turn, turns_left=self.max_turns - self._turn)
            if sanitized:
                info["action_sanitized"] = True
            if terminated or truncated:
                final = components if components is not None else hook(self._final_components, {"success": 0.0})
                comps = {k: float(v) for k, v in final.items()}
                comps.setdefault("success", 0.0)
                comps["return"] = float(sum(self._rewards))
                info["reward_components"] = comps
                self._done = True
                self._store_backend_log()
            obs = self._cut_obs(outcome.obs)
            self._last_obs = obs
            self._last_state_key = key
            info["abstract_state"] = str(hook(self._abstract_state, key))
            return obs, reward, terminated, truncated, info
        except BaseException:
            self._turn, self._done = mark[0], False
            del self._rewards[mark[1] :]
            if self._actions is not None and mark[2] is not None:
                del self._actions[mark[2] :]
            raise

    def _internal_error_step(
        self, action: str, err: Exception, *, sanitized: bool = False
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """The step result for an unexpected exception inside `step`: an error observation with
        `info["backend_error"] = "internal"` and `info["internal_error"] = <exception type>`,
        `invalid=False`, reward 0, the turn counted. Logged with the env id and task id.

        The state key and final components come from the hooks when they work, else from the last
        step (`"<last key>|internal_error"`) and `{"success": 0.0}`. TextEnv's own `_finish_step`
        is used, not a family's override (which may be what failed)."""
        env_id = self.spec.id if self.spec is not None else type(self).__name__
        log.error("%s (task %r, turn %d): internal error in step, returned as an error observation",
                  env_id, self.task.task_id, self._turn + 1, exc_info=err)
        outcome = Outcome(
            obs=self._internal_error_obs(err),
            info={"backend_error": "internal", "internal_error": type(err).__name__},
        )
        return self._finish_step_atomic(action, outcome, False, sanitized, None, None, True)

    def _cut_obs(self, obs: str) -> str:
        if len(obs) <= self.max_obs_chars:
            return obs
        return obs[: self.max_obs_chars] + f"…[truncated {len(obs) - self.max_obs_chars} chars]"

    @property
    def turn(self) -> int:
        return self._turn

    @property
    def episode_return(self) -> float:
        return float(sum(self._rewards))

    # ------------------------------------------------------------------ backends and their log
    def call_backend(self, kind: str, request: Any, fn: Callable[[], Any]) -> Any:
        """Call a backend through the episode's response log.

        Call i of an episode is logged as `(sha1(kind + canonical JSON request), result)`. When an
        earlier run of the same `(task_id, seed)` logged a matching call i, its result (or error)
        is returned without contacting the backend; a mismatch drops the old log from i and calls
        live. `fn` raises BackendError on failure; results must be JSON-serializable.
        """
        fp = fingerprint(kind, request)
        i = self._backend_calls
        self._backend_calls += 1
        if i < len(self._replay_log) and self._replay_log[i][0] == fp:
            entry = self._replay_log[i]
        else:
            self._replay_log = self._replay_log[:i]
            try:
                entry = [fp, {"ok": fn()}]
            except BackendError as err:
                entry = [fp, {"error": [err.kind, err.detail]}]
        self._backend_log.append(entry)
        payload = entry[1]
        if "error" in payload:
            raise BackendError(*payload["error"])
        return payload["ok"]

    def _store_backend_log(self) -> None:
        """Keep the episode's log for replay: at most 256 episodes and `backend_log_max_bytes` in
        all (JSON size), oldest first out; a log larger than the whole cap is not kept."""
        if not self.task.task_id or not self._backend_log:
            return
        self._backend_lru.max_bytes = self.backend_log_max_bytes  # the attribute may be set per instance
        if self._backend_lru.put((self.task.task_id, self._reset_seed), self._backend_log) is None and not self._warned_big_log:
            self._warned_big_log = True
            log.warning(
                "%s: an episode's backend log exceeds backend_log_max_bytes=%d and is not kept; replaying that "
                "episode calls the backend live (raise backend_log_max_bytes to keep such logs)",
                type(self).__name__, self.backend_log_max_bytes,
            )

    # ------------------------------------------------------------------ state and replay
    def get_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the current state by replay (JSON-serializable)."""
        if self._actions is None:
            raise NotImplementedError(
                f"{type(self).__name__} overrides step() without TextEnv's bookkeeping: call "
                "self._begin_episode(...) in reset and return self._finish_step(...) from step, or override get_state"
            )
        return {
            "seed": self._reset_seed,
            "options": dict(self._reset_options),
            "actions": list(self._actions),
            "backend_log": [list(e) for e in self._backend_log],
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state from `get_state()` (by reset and replay unless a family overrides it)."""
        options = dict(state.get("options") or {})
        options["backend_log"] = state.get("backend_log", [])
        self.replay(state.get("seed"), state["actions"], options)

    def replay(self, seed: int | None, actions: Sequence[str], options: Mapping[str, Any] | None = None) -> Replayed:
        """`reset(seed, options)` then apply `actions`; the determinism contract makes it exact."""
        obs, info = self.reset(seed=seed, options=dict(options) if options else None)
        rewards: list[float] = []
        terminated = truncated = False
        for a in actions:
            if terminated or truncated:
                raise ValueError("replay: actions continue past the end of the episode")
            obs, r, terminated, truncated, info = self.step(a)
            rewards.append(float(r))
        return Replayed(obs, info, tuple(rewards), terminated, truncated)
