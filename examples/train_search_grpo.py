"""GRPO-family training on the search env: SFT warm start, then RL with any estimator.

    python examples/train_search_grpo.py --estimator gigpo --steps 20
    python examples/train_search_grpo.py --dapo            # clip-higher 0.2/0.28 + dynamic sampling
    python examples/train_search_grpo.py --loss-agg seq-mean-token-sum-norm   # Dr. GRPO aggregation
    python examples/train_search_grpo.py --otc-grpo        # OTC-GRPO: reward the fewest searches

Prints held-out (test split) success before and after RL, with searches per episode and tool
productivity (correct answers per search).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import tyro

from creditgym.agents import tiny
from creditgym.agents.offline import expert_episodes
from creditgym.envs.search import SEARCH_EASY
from creditgym.trainers import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer
from creditgym.trainers.evaluate import evaluate


@dataclass
class Args:
    env: str = SEARCH_EASY
    estimator: str = "turn_return"
    steps: int = 20
    groups: int = 8
    group_size: int = 8
    expert_episodes: int = 256
    sft_epochs: int = 4
    n_eval: int = 64
    dapo: bool = False
    """clip-higher 0.2/0.28 and dynamic sampling"""
    otc_grpo: bool = False
    """OTC-GRPO reward transform (arXiv 2504.14870): a correct answer earns most with its group's fewest searches"""
    loss_agg: str = "token-mean"
    kl_coef: float = 0.0
    hidden: int = 128
    """tiny model width"""
    layers: int = 2
    seed: int = 0
    out: str | None = None
    """logs, episodes and checkpoints go here"""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__)
    torch.set_num_threads(2)
    env_kwargs = {"topk": 1}

    # 1. a tiny from-scratch model, warm-started on an imperfect scripted expert
    cfg = tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_layers=args.layers)
    policy = tiny.build(seed=args.seed, config=cfg)
    demos = expert_episodes(args.env, args.expert_episodes, seed=args.seed, tokenizer=policy.tokenizer, epsilon=0.3,
                            env_kwargs=env_kwargs)  # fmt: skip
    SFTTrainer(policy, SFTConfig(lr=1e-2, epochs=args.sft_epochs, warmup_steps=5), episodes=demos).train()
    before = evaluate(policy, args.env, n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=48)

    # 2. RL with the chosen estimator
    rl = GRPOConfig(
        estimator=args.estimator, steps=args.steps, num_groups=args.groups, group_size=args.group_size,
        lr=5e-4, max_new_tokens=48, loss_agg=args.loss_agg, kl_coef=args.kl_coef, env_kwargs=env_kwargs,
        seed=args.seed, out_dir=args.out, reward_transforms=["otc_grpo"] if args.otc_grpo else [],
        loss_norm_const=6 * 48 if args.loss_agg == "seq-mean-token-sum-norm" else None,
        **({"clip_eps_low": 0.2, "clip_eps_high": 0.28, "dynamic_sampling": True, "allow_short_batch": True} if args.dapo else {}),
    )  # fmt: skip
    summary = GRPOTrainer(policy, args.env, rl).train()
    after = evaluate(policy, args.env, n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=48)
    return {"before": before.success, "after": after.success, "train": summary,
            "tools": {"before": before.metrics, "after": after.metrics}}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
