"""TextEnv: the base class of every creditgym env, and the types the env families share.

Two ways to write an env (ENVS.md section 1):

1. Plain Gymnasium: override `reset` and `step` yourself. Call `self._begin_episode(task, seed,
   options)` in `reset` and return `self._finish_step(...)` from `step` to get the turn budget,
   `state_key`, `reward_components`, sanitizing and replay bookkeeping for free (both optional).
2. Hooks: write `_new_task`, `_first_obs`, `_parse`, `_apply`, `_state_key`, `_final_components`
   (and optionally `_fuzz_actions`, `_backend_error_obs`) and inherit `reset`/`step`.

Randomness comes only from `self.np_random`, which is re-seeded from the task id once the task is
chosen, so the same task always replays the same episode for the same actions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
from gymnasium.utils import seeding

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


def _fingerprint(kind: str, request: Any) -> str:
    body = json.dumps(request, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha1((kind + body).encode()).hexdigest()


class TextEnv(gymnasium.Env[str, str]):
    """Base class: text observations and actions, a turn budget, invalid-action handling, replay."""

    metadata: dict[str, Any] = {  # gymnasium convention; families may override it per instance
        "render_modes": ["ansi"],
        "deterministic": True,
        "obs_role": "user",
        "stop": (),
    }
    role = "agent"

    def __init__(
        self,
        max_turns: int = 8,
        invalid_penalty: float = 0.0,
        max_action_chars: int = 8192,
        max_obs_chars: int = 16384,
        split: str = "train",
        on_backend_error: str = "observe",
        render_mode: str | None = None,
    ):
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if on_backend_error not in ("observe", "raise"):
            raise ValueError(f"on_backend_error must be 'observe' or 'raise', got {on_backend_error!r}")
        self.max_turns = int(max_turns)
        self.invalid_penalty = float(invalid_penalty)
        self.max_action_chars = int(max_action_chars)
        self.max_obs_chars = int(max_obs_chars)
        self.split = split
        self.on_backend_error = on_backend_error
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
        self._backend_lru: OrderedDict[tuple[str, Any], list[list[Any]]] = OrderedDict()
        self._backend_log: list[list[Any]] = []
        self._replay_log: list[list[Any]] = []
        self._backend_calls = 0

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

    def _final_components(self) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__}: implement _final_components() (with a 'success' key)")

    def _fuzz_actions(self) -> list[str]:
        """Near-miss actions for the checker's fuzz test (family grammar almost right)."""
        return []

    def _valid_actions(self) -> list[str]:
        """A few well-formed actions for the current state; the checker drives episodes with them."""
        return []

    def _backend_error_obs(self, err: BackendError) -> str:
        return f"The backend failed ({err.kind}). Try again or answer with what you know."

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        # Tasks are drawn from the seeded generator; the episode's own randomness is re-seeded from
        # the task below, so a reset without a seed continues the task stream rather than the episode's.
        if seed is not None or self._task_rng is None:
            self._task_rng = self.np_random
        opts = dict(options or {})
        task = self._new_task(self._task_rng, opts)
        self._begin_episode(task, seed, opts)
        obs = self._cut_obs(self._first_obs())
        self._last_obs = obs
        return obs, self._reset_info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._check_running()
        text, sanitized = sanitize_action(action, self.max_action_chars)
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

    def render(self) -> str:
        return self._last_obs

    # ------------------------------------------------------------------ helpers for both paths
    def _begin_episode(self, task: Task, seed: int | None, options: Mapping[str, Any]) -> None:
        """Start an episode on `task`: re-seed `np_random` from the task id, zero the counters, load
        the backend response log (from `options["backend_log"]` or the env's LRU)."""
        opts = dict(options)
        given_log = opts.pop("backend_log", None)
        self.task = task
        self._np_random, _ = seeding.np_random(task_seed(task.task_id))
        self._turn = 0
        self._done = False
        self._actions = []
        self._rewards = []
        self._reset_seed = seed
        self._reset_options = opts
        key = (task.task_id, seed)
        self._replay_log = [list(e) for e in given_log] if given_log is not None else list(self._backend_lru.get(key, []))
        self._backend_log = []
        self._backend_calls = 0

    def _reset_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "task_id": self.task.task_id,
            "state_key": self._state_key(),
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
        self, action: str, outcome: Outcome, *, invalid: bool = False, sanitized: bool = False
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Count the turn, apply the budget, build info (and reward_components at the end)."""
        if self._actions is not None:
            self._actions.append(action)
        self._turn += 1
        reward = float(outcome.reward)
        self._rewards.append(reward)
        terminated = bool(outcome.terminated)
        truncated = not terminated and self._turn >= self.max_turns
        info: dict[str, Any] = dict(outcome.info)
        info.update(
            state_key=self._state_key(),
            invalid=bool(invalid),
            turn=self._turn,
            turns_left=self.max_turns - self._turn,
        )
        if sanitized:
            info["action_sanitized"] = True
        if terminated or truncated:
            self._done = True
            comps = {k: float(v) for k, v in self._final_components().items()}
            comps.setdefault("success", 0.0)
            comps["return"] = float(sum(self._rewards))
            info["reward_components"] = comps
            self._store_backend_log()
        obs = self._cut_obs(outcome.obs)
        self._last_obs = obs
        return obs, reward, terminated, truncated, info

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
        fp = _fingerprint(kind, request)
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
        if not self.task.task_id or not self._backend_log:
            return
        key = (self.task.task_id, self._reset_seed)
        self._backend_lru[key] = list(self._backend_log)
        self._backend_lru.move_to_end(key)
        while len(self._backend_lru) > _BACKEND_LOG_EPISODES:
            self._backend_lru.popitem(last=False)

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
