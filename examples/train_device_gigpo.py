"""GiGPO (arXiv 2505.10978) on the offline device-control env: anchor-state grouping of turns.

    python examples/train_device_gigpo.py --steps 20
    python examples/train_device_gigpo.py --estimator-cfg '{"gamma": 0.95, "omega": 0.5}'

GiGPO groups turns taken from the same env state (`info["state_key"]`) across a group's episodes
and mixes that step-level advantage with the episode-level one (omega). The RL flags are
GRPOConfig's fields, spelled as in `creditgym train --trainer grpo` (`--list-flags`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated

import torch
import tyro

from creditgym.envs.device import DEVICE
from creditgym.trainers import GRPOConfig, GRPOTrainer
from creditgym.trainers.evaluate import evaluate
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.quickstart import small_warm_start


@dataclass
class Args:
    train: Annotated[GRPOConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=lambda: GRPOConfig(
        estimator="gigpo", estimator_cfg={"gamma": 0.95, "omega": 1.0}, steps=20, num_groups=4, group_size=8,
        lr=5e-4, max_new_tokens=32, env_kwargs={"difficulty": 1}))  # fmt: skip
    """RL: every GRPOConfig field"""
    env: str = DEVICE
    hidden: int = 128
    """tiny model width"""
    layers: int = 2
    expert_episodes: int = 64
    """imperfect scripted-expert episodes (epsilon 0.3) of the SFT warm start"""
    sft_epochs: int = 2
    n_eval: int = 32
    """held-out tasks evaluated before and after RL"""
    threads: int = 2
    """torch intra-op threads (two runs sharing 2 cores: 1 each, or OpenMP oversubscribes them)"""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    rl = args.train
    torch.set_num_threads(args.threads)

    # 1. a tiny from-scratch model, warm-started by SFT on an imperfect scripted expert
    policy = small_warm_start(args.env, rl.env_kwargs, rl.seed, args.hidden, args.layers, args.expert_episodes,
                              args.sft_epochs)  # fmt: skip
    kw = dict(n_eval=args.n_eval, env_kwargs=rl.env_kwargs, max_new_tokens=rl.max_new_tokens)
    before = evaluate(policy, args.env, **kw)

    # 2. GRPO with GiGPO's two-level advantages
    summary = GRPOTrainer(policy, args.env, rl).train()
    after = evaluate(policy, args.env, **kw)
    return {"before": before.success, "after": after.success, "train": summary}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
