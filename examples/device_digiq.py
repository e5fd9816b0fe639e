"""Digi-Q (arXiv 2502.15760) on the offline phone simulator: a Q-function on frozen features and
best-of-N policy extraction, vs filtered BC on the same data; and how often Q prefers the expert.

    python examples/device_digiq.py                        # a few minutes on 2 CPU cores (tiny model)
    python examples/device_digiq.py --model smollm2-135m-instruct --device cuda --n-noisy 512 --lr 1e-5 \
        --repr-lr 2e-5 --critic-epochs 40 --actor-steps 200 --n-candidates 16 --max-new-tokens 128   # a GPU

1. `offline_start` (trainers/offline_start.py): a tiny from-scratch model gets a short SFT warm
   start on noisy-expert episodes (or `--sft-model` loads one); `collect_offline` writes the offline
   dataset (expert, noisy expert with eps 0.5, random, and the warm-started policy's episodes) to
   `OUT/offline.jsonl`; filtered BC (SFT of a copy of the warm start on the successes) is the baseline.
2. Digi-Q from another copy of the warm start (representation fine-tuning of a copy, TD on its frozen
   features, best-of-N extraction into the policy).
Reported: held-out (test-split) success of each, and on held-out expert states the share where Q
ranks the expert's action above a random well-formed one (0.5 is chance). The Digi-Q flags are
DigiQConfig's fields, spelled as in `creditgym train --trainer digiq` (`--list-flags`); `--out-dir`
is OUT (default: a temporary folder).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
import tyro

from creditgym.agents.offline import expert_episodes
from creditgym.envs.device import DEVICE
from creditgym.trainers import DigiQConfig, DigiQTrainer
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.offline_start import OfflineStartArgs, offline_start


@dataclass
class Args(OfflineStartArgs):
    train: Annotated[DigiQConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=lambda: DigiQConfig(
        critic_epochs=20, actor_steps=12, n_candidates=4, repr_lr=1e-3, lr=1e-3, max_new_tokens=48,
        env_kwargs={"difficulty": 1, "max_turns": 6}, tensorboard=False))  # fmt: skip
    """Digi-Q: every DigiQConfig field"""
    n_rank_episodes: int = 16
    """held-out expert episodes whose states measure Q's ranking"""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    dq = args.train
    torch.set_num_threads(args.threads)
    out = Path(dq.out_dir or tempfile.mkdtemp(prefix="digiq_"))

    # 1. warm start, offline dataset, filtered-BC baseline (held-out success of each)
    start = offline_start(args, DEVICE, dq.env_kwargs, dq.seed, dq.max_new_tokens, out)

    # 2. Digi-Q from a copy of the warm start, then how often its Q prefers the expert's action
    policy = start.warm.clone()
    trainer = DigiQTrainer(policy, DEVICE, dataclasses.replace(dq, out_dir=str(out / "digiq")), episodes=start.data)
    summary = trainer.train()
    results = {**start.results, "digiq": start.success(policy)}
    held = expert_episodes(DEVICE, args.n_rank_episodes, seed=dq.seed + 2, tokenizer=start.warm.tokenizer,
                           env_kwargs={**dq.env_kwargs, "split": "test"})  # fmt: skip
    return {"held_out_success": results, "q_ranks_expert_above_random": trainer.q_ranking(held, seed=dq.seed),
            "n_eval": args.n_eval, "eval_temperature": args.eval_temperature, "split": "test",
            "offline_data": str(out / "offline.jsonl"), "train": summary}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
