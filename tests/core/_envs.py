"""Small envs for the core tests: one per subclassing path, and deliberately broken ones."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from creditgym.envs import BackendError, Invalid, Outcome, Parsed, Task, TextEnv

ROOT = Path(__file__).resolve().parents[2]


def load_custom_env_example():
    """Import examples/custom_env.py once (it registers GuessNumber-v0)."""
    name = "creditgym_example_custom_env"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "custom_env.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def load_gymnasium_example():
    """Import examples/custom_env_gymnasium.py once (it registers HiddenCell-v0)."""
    name = "creditgym_example_custom_env_gymnasium"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "custom_env_gymnasium.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


class CountdownEnv(TextEnv):
    """Path 1: plain Gymnasium reset/step, using TextEnv's optional helpers.
    Say a number 1-3; the counter falls by it; reaching exactly 0 wins."""

    def __init__(self, start: int = 7, max_turns: int = 5, **kw):
        super().__init__(max_turns=max_turns, **kw)
        self.start = start

    def reset(self, *, seed=None, options=None):
        super(TextEnv, self).reset(seed=seed)  # gymnasium.Env.reset seeds np_random
        options = dict(options or {})
        n = int(options["task_id"].rsplit("/", 1)[1]) if "task_id" in options else self.start + int(self.np_random.integers(0, 5))
        self._begin_episode(Task(f"countdown/train/{n}", gold=()), seed, options)
        self.left = n
        return f"Counter at {n}. Say 1, 2 or 3.", {"task_id": self.task.task_id, "state_key": f"left={n}", "turn": 0}

    def step(self, action):
        self._check_running()
        action = action if isinstance(action, str) else str(action)
        if action.strip() not in ("1", "2", "3"):
            return self._finish_step(action, Outcome("Say 1, 2 or 3, for example: 2"), invalid=True)
        self.left -= int(action.strip())
        won = self.left == 0
        return self._finish_step(action, Outcome(f"Counter at {self.left}.", reward=1.0 if won else 0.0, terminated=self.left <= 0))

    def _state_key(self):
        return f"left={self.left}"

    def _final_components(self):
        return {"success": float(self.left == 0)}

    def _valid_actions(self):
        return ["1", "2", "3"]


class EchoBackendEnv(TextEnv):
    """Path 2 with a backend: every action is sent to `backend(fn)`; used for the response log."""

    def __init__(self, backend=None, **kw):
        super().__init__(max_turns=4, **kw)
        self.backend = backend
        self.calls = 0

    def _new_task(self, rng, options):
        return Task(options.get("task_id", f"echo/train/{int(rng.integers(0, 100))}"))

    def _first_obs(self):
        return "say anything"

    def _parse(self, action):
        return Parsed("say", {"text": action}) if action.strip() else Invalid("Say something non-empty, e.g. hello")

    def _apply(self, parsed):
        def live():
            self.calls += 1
            return self.backend(parsed.args["text"])

        out = self.call_backend("echo", {"text": parsed.args["text"]}, live)
        return Outcome(f"backend said {out}")

    def _state_key(self):
        return f"{self.task.task_id}:{self.turn}"

    def _final_components(self):
        return {"success": 0.0}


class LeakyEnv(CountdownEnv):
    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        self.task = Task(self.task.task_id, gold=("secret answer",))
        info["gold"] = ["secret answer"]
        return obs + " (the secret answer)", info


class NondeterministicEnv(CountdownEnv):
    _global = np.random.default_rng()

    def step(self, action):
        obs, r, te, tr, info = super().step(action)
        return obs + f" noise={self._global.integers(1000)}", r, te, tr, info


def failing_backend(text):
    raise BackendError("http_503", "down")
