"""A small CreditGRPOTrainer run, shared by test_trl.py and its two-process `accelerate launch` test.

    accelerate launch --cpu --num_processes 2 tests/integrations/trl_run.py OUT_DIR
writes OUT_DIR/rank{i}.json: this process's episodes and the advantages TRL's loss received.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

import torch
from trl import GRPOConfig

from creditgym import CreditBatch, Episode
from creditgym.agents import Collector, ScriptedPolicy, tiny
from creditgym.credit import compute
from creditgym.integrations.trl import CreditGRPOTrainer, task_dataset

ENV_ID = "creditgym/SearchEasy-v0"
ENV_KWARGS = {"max_turns": 2}


class RecordingTrainer(CreditGRPOTrainer):
    """Records what TRL's loss receives: `(completion_ids, advantages)` of each `_compute_loss` call (TRL
    shuffles the rows of a generation batch before the loss sees them)."""

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        seen = (inputs["completion_ids"].detach().clone(), inputs["advantages"].detach().clone())
        self.optimised = [*getattr(self, "optimised", []), seen]
        return super()._compute_loss(model, inputs)


def make_trainer(per_device: int, steps: int, expert_seed: int | None, group: int = 4) -> RecordingTrainer:
    """`expert_seed=None`: the tiny model generates through TRL's backend; else an imperfect scripted
    expert (tokenised by the tiny tokenizer) plays, so returns vary and advantages are not all zero. Each
    step is one group of `group` episodes of one task, split over the processes."""
    policy = tiny.build(seed=0)
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(), use_cpu=True, per_device_train_batch_size=per_device, num_generations=group,
        max_steps=steps, generation_batch_size=group, max_completion_length=8, report_to="none", save_strategy="no", learning_rate=1e-3,
        seed=0, disable_tqdm=True, logging_steps=1,
    )
    trainer = RecordingTrainer(policy.model, ENV_ID, args, estimator="gigpo", env_kwargs=ENV_KWARGS,
                               processing_class=policy.tokenizer, train_dataset=task_dataset(ENV_ID, range(2), ENV_KWARGS))
    if expert_seed is not None:
        expert = ScriptedPolicy.for_env(ENV_ID, tokenizer=policy.tokenizer, epsilon=0.5, seed=expert_seed)
        trainer.collector = Collector(expert, ENV_ID, env_kwargs=ENV_KWARGS)
    return trainer


def completion_advantages(episodes: list[Episode], estimator: str = "gigpo") -> list[list[float]]:
    """`credit.compute` on `from_episodes`, cut to each episode's completion (the tokens after its prompt)."""
    adv = compute(estimator, CreditBatch.from_episodes(episodes)).token_BT
    out = []
    for b, ep in enumerate(episodes):
        start = len(ep.turns[0].obs_ids)
        n = sum(len(t.obs_ids) + len(t.action_ids) for t in ep.turns) - start
        out.append(adv[b, start : start + n].tolist())
    return out


if __name__ == "__main__":
    out_dir = sys.argv[1]
    rank = int(os.environ.get("RANK", "0"))
    trainer = make_trainer(per_device=2, steps=1, expert_seed=rank)
    trainer.train()
    assert trainer.accelerator.num_processes == int(os.environ.get("WORLD_SIZE", "1"))
    ids, adv = trainer.optimised[0]
    record = {"episodes": [ep.to_dict() for ep in trainer.last_episodes], "ids": ids.tolist(), "advantages": adv.tolist()}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    trainer.accelerator.wait_for_everyone()
    trainer.collector.close()
    # tear gloo down before exit: a process group left to interpreter shutdown can abort a rank
    # ("terminate called without an active exception") on a loaded machine
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
