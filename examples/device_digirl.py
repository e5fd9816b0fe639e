"""DigiRL (arXiv 2406.11896) on the offline phone simulator: offline, then online, vs filtered BC.

    python examples/device_digirl.py                       # a few minutes on 2 CPU cores (tiny model)
    python examples/device_digirl.py --model smollm2-135m-instruct --device cuda --n-noisy 512 --lr 1e-5 \
        --offline-iterations 30 --online-iterations 100 --max-new-tokens 128   # a real model on a GPU

1. `offline_start` (trainers/offline_start.py): a tiny from-scratch model gets a short SFT warm
   start on noisy-expert episodes (or `--sft-model` loads one); `collect_offline` writes the offline
   dataset (expert, noisy expert with eps 0.5, random, and the warm-started policy's own episodes) to
   `OUT/offline.jsonl`, the mix in `offline.manifest.json`; filtered BC (SFT of a copy of the warm
   start on the successful trajectories) is the baseline.
2. DigiRL from another copy of the warm start, evaluated after its offline iterations and again after
   its online iterations (replay buffer, fresh episodes).
Held-out success is measured on the env's test split (unseen tasks) with the same seeds for each.
The RL flags are DigiRLConfig's fields, spelled as in `creditgym train --trainer digirl`
(`--list-flags`); `--out-dir` is OUT (default: a temporary folder).
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

from creditgym.envs.device import DEVICE
from creditgym.trainers import DigiRLConfig, DigiRLTrainer
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.offline_start import OfflineStartArgs, offline_start


@dataclass
class Args(OfflineStartArgs):
    train: Annotated[DigiRLConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=lambda: DigiRLConfig(
        offline_iterations=4, online_iterations=4, episodes_per_iteration=8, actor_steps=4, lr=1e-3,
        max_new_tokens=48, env_kwargs={"difficulty": 1, "max_turns": 6}, tensorboard=False))  # fmt: skip
    """DigiRL: every DigiRLConfig field"""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    rl = args.train
    torch.set_num_threads(args.threads)
    out = Path(rl.out_dir or tempfile.mkdtemp(prefix="digirl_"))

    # 1. warm start, offline dataset, filtered-BC baseline (held-out success of each)
    start = offline_start(args, DEVICE, rl.env_kwargs, rl.seed, rl.max_new_tokens, out)

    # 2. DigiRL from a copy of the warm start: offline iterations, then online ones
    policy = start.warm.clone()
    trainer = DigiRLTrainer(policy, DEVICE, dataclasses.replace(rl, out_dir=str(out / "digirl")), episodes=start.data)
    while trainer.step_idx < rl.offline_iterations:
        trainer.step()
    results = {**start.results, "digirl_offline": start.success(policy)}
    summary = trainer.train()
    results["digirl_online"] = start.success(policy)
    return {"held_out_success": results, "n_eval": args.n_eval, "eval_temperature": args.eval_temperature,
            "split": "test", "offline_data": str(out / "offline.jsonl"), "train": summary}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
