"""A non-string or malformed `options["task_id"]` gives a ValueError that says what to pass, in every
registered env (issue 17; RedTeam raised AttributeError)."""

from __future__ import annotations

import gymnasium
import pytest

import creditgym  # noqa: F401  (registers the built-in ids)

ENV_IDS = sorted(e for e in gymnasium.registry if e.startswith("creditgym/"))


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("task_id", [123, None, ["a/b/c"], b"search/train/x"])
def test_non_string_task_id_is_a_clear_value_error(env_id: str, task_id: object) -> None:
    env = gymnasium.make(env_id)
    with pytest.raises(ValueError, match=r"options\['task_id'\] must be a str"):
        env.reset(seed=0, options={"task_id": task_id})


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reset_by_a_real_task_id_still_works(env_id: str) -> None:
    env = gymnasium.make(env_id)
    obs, info = env.reset(seed=0)
    obs2, info2 = env.reset(seed=5, options={"task_id": info["task_id"]})
    assert info2["task_id"] == info["task_id"] and obs2 == obs
