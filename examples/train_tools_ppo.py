"""PPO with a learned critic and turn-level GAE on the tool-calling env.

    python examples/train_tools_ppo.py --steps 20 --level turn
    python examples/train_tools_ppo.py --otc               # OTC-PPO: answer reward x cos(m*pi/(2m+1))
    python examples/train_tools_ppo.py --otc-grpo          # OTC-GRPO: the group's fewest correct calls earn most

The critic is a copy of the policy network with a scalar head; the clipped value loss follows
CleanRL (vf_coef 0.5, vf_clip 0.2). Prints held-out success before and after, the critic's
explained variance, and tool calls per episode and tool productivity (correct answers per call).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import torch
import tyro

from creditgym.agents import tiny
from creditgym.envs.tools import TOOLS
from creditgym.trainers import PPOConfig, PPOTrainer
from creditgym.trainers.evaluate import evaluate


@dataclass
class Args:
    env: str = TOOLS
    level: Literal["token", "turn", "hierarchical"] = "turn"
    steps: int = 20
    groups: int = 4
    group_size: int = 4
    max_new_tokens: int = 48
    n_eval: int = 32
    hidden: int = 128
    layers: int = 2
    otc: bool = False
    """OTC-PPO (arXiv 2504.14870), env side: the answer reward is scaled by the tool-call term"""
    otc_grpo: bool = False
    """OTC-GRPO, the group form, as a reward transform"""
    seed: int = 0
    out: str | None = None


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__)
    torch.set_num_threads(2)
    env_kwargs = {"difficulty": 1, **({"otc": "ppo"} if args.otc else {})}

    cfg = tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_layers=args.layers)
    policy = tiny.build(seed=args.seed, config=cfg)
    before = evaluate(policy, args.env, n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=args.max_new_tokens)
    ppo = PPOConfig(
        steps=args.steps, num_groups=args.groups, group_size=args.group_size, lr=3e-4, critic_lr=1e-3,
        max_new_tokens=args.max_new_tokens, estimator_cfg={"level": args.level, "gamma": 1.0, "lam": 0.95},
        vf_coef=0.5, vf_clip=0.2, env_kwargs=env_kwargs, seed=args.seed, out_dir=args.out,
        reward_transforms=["otc_grpo"] if args.otc_grpo else [],
    )  # fmt: skip
    trainer = PPOTrainer(policy, args.env, ppo)
    summary = trainer.train()
    after = evaluate(policy, args.env, n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=args.max_new_tokens)
    return {"before": before.success, "after": after.success,
            "explained_variance": summary.get("explained_variance"), "train": summary,
            "tools": {"before": before.metrics, "after": after.metrics}}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
