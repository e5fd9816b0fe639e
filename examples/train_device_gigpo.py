"""GiGPO (arXiv 2505.10978) on the offline device-control env: anchor-state grouping of turns.

    python examples/train_device_gigpo.py --steps 20

GiGPO groups turns taken from the same env state (`info["state_key"]`) across a group's episodes
and mixes that step-level advantage with the episode-level one (omega).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import tyro

from creditgym.agents import tiny
from creditgym.agents.offline import expert_episodes
from creditgym.envs.device import DEVICE
from creditgym.trainers import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer
from creditgym.trainers.evaluate import evaluate


@dataclass
class Args:
    env: str = DEVICE
    steps: int = 20
    groups: int = 4
    group_size: int = 8
    expert_episodes: int = 64
    sft_epochs: int = 2
    max_new_tokens: int = 32
    n_eval: int = 32
    hidden: int = 128
    layers: int = 2
    seed: int = 0
    out: str | None = None


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__)
    torch.set_num_threads(2)
    env_kwargs = {"difficulty": 1}

    cfg = tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_layers=args.layers)
    policy = tiny.build(seed=args.seed, config=cfg)
    demos = expert_episodes(args.env, args.expert_episodes, seed=args.seed, tokenizer=policy.tokenizer, epsilon=0.3,
                            env_kwargs=env_kwargs)  # fmt: skip
    SFTTrainer(policy, SFTConfig(lr=1e-2, epochs=args.sft_epochs, warmup_steps=5), episodes=demos).train()
    kw = dict(n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=args.max_new_tokens)
    before = evaluate(policy, args.env, **kw)
    rl = GRPOConfig(estimator="gigpo", estimator_cfg={"gamma": 0.95, "omega": 1.0}, steps=args.steps,
                    num_groups=args.groups, group_size=args.group_size, lr=5e-4, max_new_tokens=args.max_new_tokens,
                    env_kwargs=env_kwargs, seed=args.seed, out_dir=args.out)  # fmt: skip
    summary = GRPOTrainer(policy, args.env, rl).train()
    after = evaluate(policy, args.env, **kw)
    return {"before": before.success, "after": after.success, "train": summary}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
