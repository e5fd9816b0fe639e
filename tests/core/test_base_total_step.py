"""`step` is total (issue 17): an unexpected exception becomes an error observation, or propagates
with on_internal_error="raise" (the checker's setting)."""

from __future__ import annotations

import logging

import gymnasium
import pytest

import creditgym
from creditgym.envs import Outcome, TextEnv

from ._envs import CountdownEnv, load_custom_env_example

GuessNumberEnv = load_custom_env_example().GuessNumberEnv


class BuggyApplyEnv(GuessNumberEnv):
    """`_apply` raises TypeError on guesses above 20 (the kind of bug a tool result can trigger)."""

    def _apply(self, parsed):
        if parsed.args["n"] > 20:
            raise TypeError("complex number in the comparison")
        return super()._apply(parsed)


class BuggyStateKeyEnv(GuessNumberEnv):
    """The `_state_key` hook itself fails after the first guess (inside `_finish_step`)."""

    def _state_key(self):
        if self.turn >= 1:
            raise KeyError("missing")
        return super()._state_key()


def test_internal_error_becomes_an_error_observation(caplog):
    env = BuggyApplyEnv(max_turns=3)
    _, info0 = env.reset(seed=0)
    with caplog.at_level(logging.ERROR, logger="creditgym.envs.base"):
        obs, r, te, tr, info = env.step("<guess>30</guess>")
    assert "TypeError" in obs and r == 0.0 and not (te or tr)
    assert info["backend_error"] == "internal" and info["internal_error"] == "TypeError"
    assert info["invalid"] is False and info["turn"] == 1 and env.get_state()["actions"] == ["<guess>30</guess>"]
    record = caplog.records[-1]
    assert info0["task_id"] in record.getMessage() and "BuggyApplyEnv" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is TypeError
    env.step("<guess>25</guess>")
    _, _, te, tr, info = env.step("<guess>26</guess>")  # the budget still ends the episode
    assert tr and not te and info["reward_components"]["success"] == 0.0


def test_internal_error_raises_when_asked():
    env = BuggyApplyEnv(on_internal_error="raise")
    env.reset(seed=0)
    with pytest.raises(TypeError, match="complex"):
        env.step("<guess>30</guess>")


def test_failing_hook_in_finish_step_rolls_back_then_counts_once():
    env = BuggyStateKeyEnv(max_turns=4)
    _, info0 = env.reset(seed=0)
    _, _, _, _, info = env.step("<guess>1</guess>")
    assert info["internal_error"] == "KeyError" and info["turn"] == 1 and env.turn == 1
    assert info["state_key"] == info0["state_key"] + "|internal_error"  # the hook failed: last key
    assert env.get_state()["actions"] == ["<guess>1</guess>"] and len(env._rewards) == 1


def test_options_are_validated():
    with pytest.raises(ValueError, match="on_internal_error"):
        GuessNumberEnv(on_internal_error="ignore")
    with pytest.raises(ValueError, match="invalid_penalty"):
        GuessNumberEnv(invalid_penalty=float("nan"))


def test_checker_uses_raise_and_restores_the_setting():
    env = BuggyApplyEnv()
    report = creditgym.check_env(env, n_seeds=3, strict=False)
    assert not report.ok and any("TypeError" in r.message for r in report.failures)
    assert env.on_internal_error == "observe"


def test_collector_survives_an_internal_error():
    from creditgym.agents import Collector, ScriptedPolicy

    env_id = "test/BuggyGuess-v0"
    if env_id not in gymnasium.registry:
        gymnasium.register(env_id, entry_point=BuggyApplyEnv)
    policy = ScriptedPolicy.for_env("GuessNumber-v0")  # bisects from 16: guesses above 20 hit the bug
    episodes = Collector(policy, env_id, group_size=2).collect(num_groups=4, seed=0)
    assert len(episodes) == 8
    assert "internal" in {t.info.get("backend_error") for ep in episodes for t in ep.turns}
    assert "TypeError" in {t.info.get("internal_error") for ep in episodes for t in ep.turns}  # kept for metrics
    from creditgym.trajectory import episode_metrics

    metrics = episode_metrics(episodes)
    assert metrics["internal_errors"] >= 1 and metrics["backend_errors"] >= metrics["internal_errors"]


def test_plain_step_can_use_the_same_error_observation():
    class PlainTotal(CountdownEnv):
        def step(self, action):
            try:
                if action == "boom":
                    raise ZeroDivisionError("x")
                return super().step(action)
            except ZeroDivisionError as err:
                return self._internal_error_step(action, err)

    env = PlainTotal()
    env.reset(seed=0)
    _, _, _, _, info = env.step("boom")
    assert info["internal_error"] == "ZeroDivisionError" and info["turn"] == 1 and info["state_key"].startswith("left=")


class _Plain(TextEnv):
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "x", {"state_key": "k"}

    def step(self, action):
        return self._finish_step(action, Outcome("y"), state_key="k", components={"success": 0.0})


def test_plain_env_error_observation_falls_back_to_the_last_key_without_hooks():
    env = _Plain(max_turns=1)
    env.reset(seed=0)
    _, _, _, tr, info = env._internal_error_step("a", ValueError("v"))
    assert tr and info["state_key"] == "|internal_error" and info["reward_components"] == {"success": 0.0, "return": 0.0}
