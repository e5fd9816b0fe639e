"""Device family: the scripted expert meets ENVS.md's targets (small seed counts in CI), the random
baseline stays low, and both run through the Policy classes."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from creditgym.agents.base import Context, Sampling
from creditgym.agents.scripted import RandomPolicy, ScriptedPolicy, play_episode
from creditgym.envs.device import device_expert, device_random

ENV_ID = "creditgym/Device-v0"


@pytest.mark.parametrize(("difficulty", "target"), [(1, 0.95), (2, 0.95), (3, 0.9)])
def test_expert_meets_targets(difficulty: int, target: float) -> None:
    env = gymnasium.make(ENV_ID, split="test", difficulty=difficulty)
    comps = [play_episode(env, device_expert, s).components for s in range(25)]
    assert np.mean([c["success"] for c in comps]) >= target
    assert sum(c["collateral"] for c in comps) == 0


@pytest.mark.parametrize("kwargs", [
    {"shuffle_layout": True, "distractor_elements": 6, "difficulty": (1, 2)},
    {"popup_prob": 0.6, "difficulty": (2, 3)},
    {"split": "heldout", "difficulty": 3},
    {"p_infeasible": 1.0, "difficulty": (1, 2, 3), "list_length": (30, 30)},
    {"screen": "compact", "difficulty": (1, 2, 3), "popup_prob": 0.3},
])
def test_expert_is_robust_to_knobs(kwargs: dict) -> None:
    env = gymnasium.make(ENV_ID, **kwargs)
    comps = [play_episode(env, device_expert, s).components for s in range(12)]
    assert np.mean([c["success"] for c in comps]) >= 0.9


def test_random_baseline_is_low() -> None:
    env = gymnasium.make(ENV_ID, split="test", difficulty=(1, 2, 3))
    comps = [play_episode(env, device_random, s).components for s in range(40)]
    assert np.mean([c["success"] for c in comps]) <= 0.1


def test_policies_for_env_generate_actions() -> None:
    env = gymnasium.make(ENV_ID)
    obs, _ = env.reset(seed=0)
    ctx = Context(obs_texts=[obs])
    for policy in (ScriptedPolicy.for_env(ENV_ID), RandomPolicy.for_env(ENV_ID, seed=1), ScriptedPolicy.for_env(ENV_ID, epsilon=0.5)):
        (gen,) = policy.generate([ctx], Sampling())
        _, _, _, _, info = env.step(gen.text)
        assert not info["invalid"] and gen.token_ids
        env.reset(seed=0)
