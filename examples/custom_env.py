"""A custom env in ~60 lines: guess a secret number with higher/lower feedback.

It uses TextEnv's hooks (path 2 of ENVS.md section 1): write how a task is drawn, what the agent
sees first, how an action is parsed and applied, and what the final reward components are; TextEnv
supplies reset/step, the turn budget, invalid-action observations and replay.

    python examples/custom_env.py                       # plays the scripted expert once
    creditgym check examples/custom_env.py:GuessNumber-v0
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium
import numpy as np

import creditgym
from creditgym.agents import register_scripted
from creditgym.agents.base import Context
from creditgym.agents.scripted import play_episode
from creditgym.envs import Invalid, Outcome, Parsed, Task, TextEnv, split_of_key

ENV_ID = "GuessNumber-v0"


class GuessNumberEnv(TextEnv):
    """Find the secret integer in [1, high] in at most `max_turns` guesses; reward 1 on success."""

    metadata = {**TextEnv.metadata, "obs_role": "user", "stop": ()}

    def __init__(self, high: int = 32, max_turns: int = 6, split: str = "train", **kw: Any):
        super().__init__(max_turns=max_turns, split=split, **kw)
        self.high = high

    def _new_task(self, rng: np.random.Generator, options: dict) -> Task:
        if "task_id" in options:
            secret = int(options["task_id"].rsplit("/", 1)[1].split("-")[1])
        else:
            while True:  # rejection-sample a secret whose key lands in the requested split
                secret = int(rng.integers(1, self.high + 1))
                if split_of_key(f"{self.high}-{secret}") == self.split:
                    break
        return Task(f"guess/{self.split}/{self.high}-{secret}", self.split, gold=(str(secret),), private={"secret": secret})

    def _first_obs(self) -> str:
        return f"I picked an integer from 1 to {self.high}. Reply with <guess>N</guess>. You have {self.max_turns} guesses."

    def _parse(self, action: str) -> Parsed | Invalid:
        m = re.search(r"<guess>\s*(-?\d{1,9})\s*</guess>", action)
        if m is None:
            return Invalid("Invalid action: reply with one guess in tags, for example <guess>7</guess>.")
        return Parsed("guess", {"n": int(m.group(1))}, action)

    def _apply(self, parsed: Parsed) -> Outcome:
        n, secret = parsed.args["n"], self.task.private["secret"]
        self._last_guess = n
        if n == secret:
            return Outcome("Correct!", reward=1.0, terminated=True)
        return Outcome(f"{n} is too {'low' if n < secret else 'high'}.")

    def _state_key(self) -> str:
        return f"{self.task.task_id}|turn={self.turn}|last={getattr(self, '_last_guess', None)}"

    def _final_components(self) -> dict[str, float]:
        return {"success": float(self.episode_return > 0)}

    def _valid_actions(self) -> list[str]:
        return [f"<guess>{n}</guess>" for n in (1, self.high // 2, self.high)]

    def _fuzz_actions(self) -> list[str]:
        return ["<guess></guess>", "<guess>seven</guess>", "guess 7", "<guess>99999999999999</guess>"]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        self._last_guess = None
        return super().reset(seed=seed, options=options)


def bisect_expert(ctx: Context, rng: np.random.Generator) -> str:
    """Binary search over the feedback in the observations so far."""
    lo, hi = 1, int(re.search(r"from 1 to (\d+)", ctx.obs_texts[0]).group(1))
    for action, obs in zip(ctx.action_texts, ctx.obs_texts[1:]):
        m = re.search(r"<guess>\s*(-?\d+)", action)
        if m and "too low" in obs:
            lo = max(lo, int(m.group(1)) + 1)
        elif m and "too high" in obs:
            hi = min(hi, int(m.group(1)) - 1)
    return f"<guess>{(lo + hi) // 2}</guess>"


def random_guess(ctx: Context, rng: np.random.Generator) -> str:
    high = int(re.search(r"from 1 to (\d+)", ctx.obs_texts[0]).group(1))
    return f"<guess>{int(rng.integers(1, high + 1))}</guess>"


creditgym.register(ENV_ID, GuessNumberEnv, description="guess a number with higher/lower feedback (example)")
register_scripted(ENV_ID, expert=bisect_expert, random=random_guess)

if __name__ == "__main__":
    result = play_episode(gymnasium.make(ENV_ID), bisect_expert, seed=0)
    for action, obs in zip(result.ctx.action_texts, result.ctx.obs_texts[1:]):
        print(f"{action:>20}  ->  {obs}")
    print("success:", result.components["success"])
