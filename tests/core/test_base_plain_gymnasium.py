"""The plain Gymnasium path (issue 16 item 1): an env that writes only reset/step, no task hooks."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.utils import seeding
from gymnasium.utils.env_checker import check_env as gym_check_env

import creditgym
from creditgym import CreditBatch
from creditgym.envs import Outcome, TextEnv

from ._envs import load_gymnasium_example

ENV_ID = load_gymnasium_example().ENV_ID


class BareEnv(TextEnv):
    """Overrides reset without any task hook; records what TextEnv.reset returned."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.base_result = super().reset(seed=seed)
        return "go", {"state_key": "s0"}

    def step(self, action: str):
        self._check_running()
        done = action == "stop"
        return self._finish_step(action, Outcome("ok", reward=1.0, terminated=done), state_key=f"s{self.turn + 1}",
                                 components={"success": float(done), "extra": 2.0})


def test_super_reset_seeds_np_random_and_zeroes_counters_only():
    env = BareEnv(max_turns=3)
    env.reset(seed=7)
    env.step("a")
    env.task_marker = "untouched"
    env.reset(seed=11)
    expected, _ = seeding.np_random(11)
    assert env.np_random.random() == expected.random()  # seeded from the seed, not re-seeded from a task
    assert env.turn == 0 and env.episode_return == 0.0 and env.get_state()["actions"] == []
    assert env.base_result == ("", {}) and env.task.task_id == "" and env.task_marker == "untouched"


def test_finish_step_takes_state_key_and_components_without_calling_hooks():
    env = BareEnv(max_turns=2)
    env.reset(seed=0)
    _, _, te, tr, info = env.step("a")
    assert info["state_key"] == "s1" and info["turn"] == 1 and not (te or tr)
    _, _, te, tr, info = env.step("b")  # the turn budget still applies
    assert tr and not te and info["reward_components"] == {"success": 0.0, "extra": 2.0, "return": 2.0}
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("c")


def test_text_env_without_hooks_or_reset_still_says_what_to_write():
    with pytest.raises(NotImplementedError, match="_new_task"):
        TextEnv().reset(seed=0)


def test_example_passes_creditgym_and_gymnasium_checkers():
    report = creditgym.check_env(ENV_ID, n_seeds=3, n_fuzz=16)
    assert report.ok
    skipped = {r.name: r.message for r in report.results if r.message.startswith("skipped")}
    assert skipped == {"reset by task_id": "skipped: the env declares no task ids"}
    gym_check_env(gymnasium.make(ENV_ID).unwrapped, skip_render_check=True)


def test_checker_still_applies_task_id_checks_where_declared():
    from ._envs import CountdownEnv  # plain path that reports info["task_id"]

    class BrokenTaskIds(CountdownEnv):
        def reset(self, *, seed=None, options=None):
            options = {k: v for k, v in (options or {}).items() if k != "task_id"}  # ignores task_id
            return super().reset(seed=seed, options=options)

    report = creditgym.check_env(BrokenTaskIds(), n_seeds=3, strict=False)
    assert [r.name for r in report.failures] == ["reset by task_id"]


def test_collector_batch_and_grpo_credit_run_on_the_example():
    from creditgym import credit
    from creditgym.agents import Collector, RandomPolicy, ScriptedPolicy

    expert = Collector(ScriptedPolicy.for_env(ENV_ID), ENV_ID, group_size=2).collect(num_groups=3, seed=0)
    random = Collector(RandomPolicy.for_env(ENV_ID), ENV_ID, group_size=2).collect(num_groups=3, seed=0)
    assert all(ep.outcome["success"] == 1.0 for ep in expert)
    assert all(ep.turns[0].state_key == "size=5|probes=" for ep in expert + random)
    batch = CreditBatch.from_episodes(expert + random)
    adv = credit.compute("grpo", batch)
    assert np.isfinite(adv.turn_BK.numpy()).all() and adv.turn_BK.shape[0] == 12


def test_grpo_trainer_step_on_the_example(tmp_path):
    import torch

    from creditgym.agents import tiny
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    torch.set_num_threads(1)
    policy = tiny.build(seed=0, cache_dir=tmp_path, env_ids=[], config=tiny.TinyConfig(
        vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1))
    cfg = GRPOConfig(steps=1, num_groups=2, group_size=2, max_new_tokens=8, lr=1e-3, tensorboard=False)
    trainer = GRPOTrainer(policy, ENV_ID, cfg)
    trainer.train()
    step = trainer.history[0]
    assert len(trainer.history) == 1 and step["episodes"] == 4.0 and step["tokens"] > 0 and np.isfinite(step["grad_norm"])
