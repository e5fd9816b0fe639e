"""TTRL: reinforcement learning on the unlabelled test split with majority-vote rewards.

TTRL ("TTRL: Test-Time Reinforcement Learning", arXiv 2504.16084): each test question is answered
`votes` times, the most frequent answer becomes the pseudo-label, and agreeing answers earn 1. No
gold answer enters training; only the evaluation reads it.

    python examples/train_search_ttrl.py                     # tiny model, SFT warm start, offline corpus
    python examples/train_search_ttrl.py --votes 16 --train 8 --steps 40

Prints maj@n and pass@1 on the test split before and after, and the majority ratio per step.
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
    steps: int = 20
    groups: int = 4
    """test questions per step"""
    votes: int = 16
    """samples per question that vote (METHODS.md 3 offline default; the release uses 64)"""
    train: int = 8
    """of which the first `train` are trained on (release: 32)"""
    expert_episodes: int = 256
    """labelled train-split demonstrations for the warm start (stands in for pretraining)"""
    sft_epochs: int = 4
    n_eval: int = 32
    """test questions in the before/after evaluation"""
    eval_samples: int = 16
    """samples per question for maj@n / pass@1 (the release evaluates 16 at temperature 0.6)"""
    lr: float = 5e-4
    hidden: int = 128
    """tiny model width"""
    layers: int = 2
    max_new_tokens: int = 48
    seed: int = 0
    out: str | None = None
    """logs, episodes and checkpoints go here"""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__)
    torch.set_num_threads(2)
    env_kwargs = {"topk": 1}

    # 1. a tiny from-scratch model, warm-started on an imperfect scripted expert (train split, labelled)
    cfg = tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_layers=args.layers)
    policy = tiny.build(seed=args.seed, config=cfg)
    demos = expert_episodes(args.env, args.expert_episodes, seed=args.seed, tokenizer=policy.tokenizer, epsilon=0.3,
                            env_kwargs=env_kwargs)  # fmt: skip
    SFTTrainer(policy, SFTConfig(lr=1e-2, epochs=args.sft_epochs, warmup_steps=5), episodes=demos).train()

    def held_out() -> dict[str, float]:
        res = evaluate(policy, args.env, n_eval=args.n_eval, samples=args.eval_samples, temperature=0.6,
                       env_kwargs=env_kwargs, max_new_tokens=args.max_new_tokens)  # fmt: skip
        return {"pass@1": res.metrics["pass@1"], f"maj@{args.eval_samples}": res.metrics[f"maj@{args.eval_samples}"]}

    before = held_out()

    # 2. TTRL on the test split: the "ttrl" transform replaces the answer reward by the group's vote
    rl = GRPOConfig(
        estimator="grpo", steps=args.steps, num_groups=args.groups, group_size=args.votes, lr=args.lr,
        max_new_tokens=args.max_new_tokens, temperature=1.0, env_kwargs={**env_kwargs, "split": "test"},
        reward_transforms=["ttrl"], reward_transform_cfg={"ttrl": {"train": args.train}},
        seed=args.seed + 1, out_dir=args.out,
    )  # fmt: skip
    trainer = GRPOTrainer(policy, args.env, rl)
    summary = trainer.train()
    after = held_out()
    ratios = [round(m["reward/ttrl/majority_ratio"], 3) for m in trainer.history]
    return {"before": before, "after": after, "majority_ratio": ratios, "train": summary}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
