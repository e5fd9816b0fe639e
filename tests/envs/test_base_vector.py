"""Gymnasium's vector API and common wrappers on every registered env (issue 16 item 1).

Parametrized over the registry, so an env id added later is covered without editing this file."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import gymnasium
import pytest
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory
from gymnasium.wrappers import RecordEpisodeStatistics, TimeLimit
from hypothesis import given, settings
from hypothesis import strategies as st

import creditgym  # noqa: F401  (registers the built-in ids)
from creditgym.spaces import Text

ROOT = Path(__file__).resolve().parents[2]


def _load_example(name: str) -> None:
    mod = f"creditgym_example_{name}"
    if mod not in sys.modules:
        spec = importlib.util.spec_from_file_location(mod, ROOT / "examples" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod] = module
        spec.loader.exec_module(module)


for _name in ("custom_env", "custom_env_gymnasium"):
    _load_example(_name)
ENV_IDS = sorted(e for e in gymnasium.registry if e.startswith("creditgym/")) + ["GuessNumber-v0", "HiddenCell-v0"]
ACTIONS = ("hello \x00 \ud800 中 🙂", "<answer>x</answer>", "<probe>A1</probe>", '{"action_type": "wait"}')


@given(st.lists(st.text(max_size=12), min_size=1, max_size=3))
@settings(max_examples=50, deadline=None)
def test_text_shared_memory_round_trips_any_string(texts: list[str]) -> None:
    space = Text(max_length=12)
    mem = create_shared_memory(space, n=len(texts))
    view = read_from_shared_memory(space, mem, n=len(texts))  # a live view, as AsyncVectorEnv holds it
    for i, t in enumerate(texts):
        write_to_shared_memory(space, i, t, mem)
    assert copy.deepcopy(view) == tuple(texts) and list(view) == texts


def test_text_shared_memory_rejects_a_string_longer_than_the_space() -> None:
    space = Text(max_length=3)
    with pytest.raises(ValueError, match="max_length"):
        write_to_shared_memory(space, 0, "abcd", create_shared_memory(space, n=1))


def _vec(env_id: str, mode: str, n: int = 2) -> gymnasium.vector.VectorEnv:
    return gymnasium.make_vec(env_id, num_envs=n, vectorization_mode=mode)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_sync_and_async_agree(env_id: str) -> None:
    """Async uses gymnasium's default shared memory; it must give what sync gives, step by step."""
    runs = []
    for mode in ("sync", "async"):
        venv = _vec(env_id, mode)
        try:
            obs, _ = venv.reset(seed=0)
            trace = [tuple(obs)]
            for a in ACTIONS[:3]:
                obs, rew, term, trunc, _ = venv.step((a, ACTIONS[3]))
                trace.append((tuple(obs), tuple(rew), tuple(term), tuple(trunc)))
        finally:
            venv.close()
        runs.append(trace)
    assert runs[0] == runs[1]
    assert all(isinstance(o, str) and o for o in runs[1][0])


def test_make_vec_async_with_four_envs() -> None:
    venv = _vec("creditgym/SearchEasy-v0", "async", n=4)
    try:
        obs, info = venv.reset(seed=[0, 1, 2, 3])
        assert len(obs) == 4 and len(set(obs)) > 1 and all(o.startswith(obs[0][:20]) for o in obs)
        obs2, *_ = venv.step(("<search>x</search>",) * 4)
        assert len(obs2) == 4 and obs2 != obs
    finally:
        venv.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_time_limit_and_episode_statistics_wrappers(env_id: str) -> None:
    env = RecordEpisodeStatistics(TimeLimit(gymnasium.make(env_id), max_episode_steps=2))
    env.reset(seed=0)
    steps = 0
    term = trunc = False
    while not (term or trunc):
        _, _, term, trunc, info = env.step("not an action \x00")
        steps += 1
    assert steps <= 2 and "episode" in info and info["episode"]["l"] == steps
    env.close()
