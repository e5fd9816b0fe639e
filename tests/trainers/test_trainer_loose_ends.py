"""Wave-1 loose ends (issue 16 item 5): `train --trainer sft --rft-n`, env curricula see the
trainer's round, the SmolLM2 example's expert episodes."""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from _trainer_helpers import LetterEnv, register_letter_env

from creditgym import Episode, TaskSpec

STEP_ENV_ID = "TrainerTestStepLetter-v0"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class StepLetterEnv(LetterEnv):
    """LetterEnv that reports the `training_step` it was given (as SimSearch reads it at reset)."""

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.training_step = -1

    def _final_components(self) -> dict[str, float]:
        return {**super()._final_components(), "training_step": float(self.training_step)}


class RecordingSampler:
    def __init__(self) -> None:
        self.rounds: list[list[Episode]] = []

    def sample(self, n: int, rng: Any) -> list[TaskSpec]:
        return [TaskSpec("default", {}) for _ in range(n)]

    def update(self, specs: Sequence[TaskSpec], episodes: Sequence[Episode], advantages: Sequence[Any]) -> None:
        self.rounds.append(list(episodes))


@pytest.fixture(scope="module", autouse=True)
def envs() -> None:
    import gymnasium

    register_letter_env()
    if STEP_ENV_ID not in gymnasium.registry:
        gymnasium.register(STEP_ENV_ID, entry_point=StepLetterEnv)


@pytest.mark.parametrize("trainer", ["grpo", "ppo"])
def test_rl_trainers_forward_their_round_as_training_step(tiny_policy, trainer: str) -> None:
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer
    from creditgym.trainers.ppo import PPOConfig, PPOTrainer

    cls, cfg_cls = (GRPOTrainer, GRPOConfig) if trainer == "grpo" else (PPOTrainer, PPOConfig)
    sampler = RecordingSampler()
    cfg = cfg_cls(steps=3, num_groups=1, group_size=2, max_new_tokens=3, tensorboard=False)
    cls(tiny_policy, STEP_ENV_ID, cfg, task_sampler=sampler).train()
    seen = [{e.outcome["training_step"] for e in eps} for eps in sampler.rounds]
    assert seen == [{0.0}, {1.0}, {2.0}]


def test_simsearch_noise_follows_the_trainer_round(tiny_policy) -> None:
    from creditgym.envs.selfsearch.simsearch_env import noise_schedule
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    env_kwargs = {"noise": [0.0, 1.0], "total_steps": 2}
    cfg = GRPOConfig(steps=2, num_groups=1, group_size=1, max_new_tokens=2, tensorboard=False, env_kwargs=env_kwargs)
    sampler = RecordingSampler()
    GRPOTrainer(tiny_policy, "creditgym/SimSearch-v0", cfg, task_sampler=sampler).train()
    probs = [eps[0].outcome["noise_prob"] for eps in sampler.rounds]  # reward_components of the last step
    expected = [noise_schedule(k, 0.0, 1.0, 4.0, 2) for k in (0, 1)]
    assert probs == pytest.approx(expected) and expected[0] != expected[1]


def test_cli_train_sft_with_rft_passes_the_env_id(tiny_policy, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from creditgym.cli import app

    register_letter_env()
    model = tiny_policy.save(tmp_path / "model")
    res = CliRunner().invoke(app, ["train", "TrainerTestLetter-v0", "--trainer", "sft", "--model", str(model),
                                   "--save", str(tmp_path / "saved"), "--rft-n", "2", "--rft-groups", "1",
                                   "--rft-k", "1", "--max-new-tokens", "3", "--no-tensorboard"])  # fmt: skip
    assert res.exit_code == 0, repr(res.exception)
    saved = json.loads((tmp_path / "saved" / "eval_config.json").read_text())
    assert saved["env_id"] == "TrainerTestLetter-v0" and saved["split"] == "test"


def test_smollm2_example_takes_its_expert_episodes_from_the_offline_helper() -> None:
    tree = ast.parse((EXAMPLES / "train_search_smollm2_lora.py").read_text())
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "expert_episodes" in called and "Collector" not in called
