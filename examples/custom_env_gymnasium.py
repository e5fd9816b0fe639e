"""A custom env written the plain Gymnasium way: find a hidden cell on a grid.

Only `reset` and `step` are written (path 1 of docs/envs.md), the way any Gymnasium env is: no task
hooks, no task ids. `super().reset(seed=seed)` seeds `self.np_random` and zeroes TextEnv's counters;
`step` hands its observation, reward, state key and reward components to `self._finish_step`, which
counts the turn, applies the turn budget and builds the info keys the Collector and estimators read.
Compare examples/custom_env.py, the same kind of game written with TextEnv's hooks.

    python examples/custom_env_gymnasium.py              # checks the env, then plays a few episodes
    creditgym check examples/custom_env_gymnasium.py:HiddenCell-v0
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

import creditgym
from creditgym.agents import Collector, RandomPolicy, ScriptedPolicy, register_scripted
from creditgym.agents.base import Context
from creditgym.envs import Outcome, TextEnv, sanitize_action

ENV_ID = "HiddenCell-v0"
PROBE = re.compile(r"<probe>\s*([A-Za-z])\s*(\d{1,2})\s*</probe>")


class HiddenCellEnv(TextEnv):
    """A cell of a `size` x `size` grid is hidden; each probe says how far (Manhattan) it is."""

    metadata = {**TextEnv.metadata, "obs_role": "user", "stop": ("</probe>",)}

    def __init__(self, size: int = 5, max_turns: int = 8, **kw: Any):
        super().__init__(max_turns=max_turns, **kw)
        self.size = size

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed, options=options)  # seeds np_random, zeroes TextEnv's counters
        self.hidden = (int(self.np_random.integers(self.size)), int(self.np_random.integers(self.size)))
        self.probes: list[str] = []
        last = chr(ord("A") + self.size - 1)
        obs = (f"A cell of a {self.size}x{self.size} grid (columns A-{last}, rows 1-{self.size}) is hidden. "
               f"Probe a cell with <probe>B3</probe>; I tell you its distance to the hidden cell.")
        return obs, {"state_key": self._key(), "turn": 0, "turns_left": self.max_turns}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._check_running()  # stepping after the end raises RuntimeError
        text, _ = sanitize_action(action, self.max_action_chars)
        m = PROBE.search(text)
        col = ord(m.group(1).upper()) - ord("A") if m else -1
        row = int(m.group(2)) - 1 if m else -1
        if not (0 <= col < self.size and 0 <= row < self.size):
            outcome = Outcome("Invalid probe: name one cell of the grid in tags, for example <probe>B3</probe>.",
                              reward=self.invalid_penalty)
            return self._finish_step(text, outcome, invalid=True, state_key=self._key(), components={"success": 0.0})
        self.probes.append(f"{chr(ord('A') + col)}{row + 1}")
        dist = abs(col - self.hidden[0]) + abs(row - self.hidden[1])
        found = dist == 0
        obs = "Found it!" if found else f"{self.probes[-1]} is {dist} away."
        return self._finish_step(text, Outcome(obs, reward=float(found), terminated=found),
                                 state_key=self._key(), components={"success": float(found)})

    def _key(self) -> str:
        return f"size={self.size}|probes={','.join(self.probes)}"

    def _valid_actions(self) -> list[str]:  # optional: the checker drives episodes with these
        return ["<probe>A1</probe>", f"<probe>C{self.size}</probe>"]


def _cells(obs0: str) -> list[tuple[int, int]]:
    size = int(re.search(r"(\d+)x", obs0).group(1))
    return [(c, r) for r in range(size) for c in range(size)]


def consistent_expert(ctx: Context, rng: np.random.Generator) -> str:
    """Probe the first cell consistent with every distance seen so far."""
    candidates = _cells(ctx.obs_texts[0])
    for action, obs in zip(ctx.action_texts, ctx.obs_texts[1:]):
        m, d = PROBE.search(action), re.search(r"is (\d+) away", obs)
        if m and d:
            pc, pr = ord(m.group(1).upper()) - ord("A"), int(m.group(2)) - 1
            candidates = [(c, r) for c, r in candidates if abs(c - pc) + abs(r - pr) == int(d.group(1))]
    c, r = candidates[0]
    return f"<probe>{chr(ord('A') + c)}{r + 1}</probe>"


def random_probe(ctx: Context, rng: np.random.Generator) -> str:
    cells = _cells(ctx.obs_texts[0])
    c, r = cells[int(rng.integers(len(cells)))]
    return f"<probe>{chr(ord('A') + c)}{r + 1}</probe>"


creditgym.register(ENV_ID, HiddenCellEnv, description="find a hidden grid cell from distances (plain Gymnasium example)")
register_scripted(ENV_ID, expert=consistent_expert, random=random_probe)

if __name__ == "__main__":
    print(creditgym.check_env(ENV_ID))
    for policy in (ScriptedPolicy.for_env(ENV_ID), RandomPolicy.for_env(ENV_ID)):
        episodes = Collector(policy, ENV_ID, group_size=2).collect(num_groups=4, seed=0)
        success = np.mean([ep.outcome.get("success", 0.0) for ep in episodes])
        print(f"{type(policy).__name__:>14}: {len(episodes)} episodes, success {success:.2f}, mean turns "
              f"{np.mean([len(ep.turns) for ep in episodes]):.1f}")
