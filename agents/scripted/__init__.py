"""Scripted experts and random baselines, one module per env family.

A family module (`agents/scripted/<family>.py`) registers, for each env id it serves, two
functions of the same signature with `register_scripted`:

    def expert(ctx: Context, rng: np.random.Generator) -> str      # a good action
    def random(ctx: Context, rng: np.random.Generator) -> str      # a random well-formed action

They read only `ctx.obs_texts`, `ctx.action_texts` and `ctx.role` (the raw env text), never the
chat rendering, so they behave the same whatever the observation role or chat template.
`ScriptedPolicy.for_env(env_id)` / `RandomPolicy.for_env(env_id)` import the family module on first
use (families are looked up in `FAMILY_MODULES`; user envs call `register_scripted` themselves).
`play_episode` / `success_rate` (play.py) run such functions against an env in the plain Gymnasium loop.
"""

from __future__ import annotations

import importlib

from creditgym.agents.scripted.play import PlayResult, play_episode, play_episodes, success_rate
from creditgym.agents.scripted.policy import (
    ActionFn,
    RandomPolicy,
    ScriptedPolicy,
    register_scripted,
    scripted_functions,
)
from creditgym.agents.scripted.tokenizer import ByteTokenizer

__all__ = [
    "FAMILY_MODULES",
    "ActionFn",
    "ByteTokenizer",
    "PlayResult",
    "RandomPolicy",
    "ScriptedPolicy",
    "load_family",
    "play_episode",
    "play_episodes",
    "register_scripted",
    "scripted_functions",
    "success_rate",
]

# env id -> the family module that registers its scripted functions.
FAMILY_MODULES: dict[str, str] = {
    "creditgym/Search-v0": "search",
    "creditgym/SearchEasy-v0": "search",
    "creditgym/SelfSearch-v0": "selfsearch",
    "creditgym/SimSearch-v0": "selfsearch",
    "creditgym/Tools-v0": "tools",
    "creditgym/ToolsPython-v0": "tools",
    "creditgym/Device-v0": "device",
    "creditgym/RedTeam-v0": "redteam",
    "creditgym/RedTeamDefender-v0": "redteam",
    "creditgym/RedTeamSelfPlay-v0": "redteam",
}


def load_family(env_id: str) -> None:
    """Import the family module that serves `env_id` (a no-op for user-registered envs)."""
    name = FAMILY_MODULES.get(env_id)
    if name is not None:
        importlib.import_module(f"creditgym.agents.scripted.{name}")
