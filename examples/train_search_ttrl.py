"""TTRL: reinforcement learning on the unlabelled test split with majority-vote rewards.

TTRL ("TTRL: Test-Time Reinforcement Learning", arXiv 2504.16084): each test question is answered
`--group-size` times (the votes), the most frequent answer becomes the pseudo-label, and agreeing
answers earn 1. No gold answer enters training; only the evaluation reads it.

    python examples/train_search_ttrl.py                     # tiny model, SFT warm start, offline corpus
    python examples/train_search_ttrl.py --group-size 16 --reward-transform-cfg '{"ttrl": {"train": 8}}' --steps 40

The RL flags are GRPOConfig's fields, spelled as in `creditgym train --trainer grpo` (`--list-flags`):
`--num-groups` test questions per step, `--group-size` votes per question, of which the first
`reward_transform_cfg["ttrl"]["train"]` are trained on (METHODS.md 3 offline defaults 16 and 8; the
release uses 64 and 32). Prints maj@n and pass@1 on the test split before and after, and the
majority ratio per step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated

import torch
import tyro

from creditgym.envs.search import SEARCH_EASY
from creditgym.trainers import GRPOConfig, GRPOTrainer
from creditgym.trainers.evaluate import evaluate
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.quickstart import small_warm_start


@dataclass
class Args:
    train: Annotated[GRPOConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=lambda: GRPOConfig(
        estimator="grpo", steps=20, num_groups=4, group_size=16, lr=5e-4, max_new_tokens=48, temperature=1.0,
        env_kwargs={"topk": 1, "split": "test"}, reward_transforms=["ttrl"],
        reward_transform_cfg={"ttrl": {"train": 8}}))  # fmt: skip
    """RL on the test split: every GRPOConfig field"""
    env: str = SEARCH_EASY
    hidden: int = 128
    """tiny model width"""
    layers: int = 2
    expert_episodes: int = 256
    """labelled train-split demonstrations for the warm start (stands in for pretraining)"""
    sft_epochs: int = 4
    n_eval: int = 32
    """test questions in the before/after evaluation"""
    eval_samples: int = 16
    """samples per question for maj@n / pass@1 (the release evaluates 16 at temperature 0.6)"""
    sft_model: str | None = None
    """start from this saved model (e.g. the quickstart's runs/quickstart/sft_model, with its prompt:
    --env-kwargs '{"topk": 1, "split": "test", "prompt_path": "trainers/data/quickstart_prompt.txt"}')
    instead of the small warm start above"""
    threads: int = 2
    """torch intra-op threads (two runs sharing 2 cores: 1 each, or OpenMP oversubscribes them)"""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    rl = args.train
    torch.set_num_threads(args.threads)

    # 1. a tiny from-scratch model, warm-started on an imperfect scripted expert (train split, labelled)
    policy = small_warm_start(args.env, {**rl.env_kwargs, "split": "train"}, rl.seed, args.hidden, args.layers,
                              args.expert_episodes, args.sft_epochs, sft_model=args.sft_model)  # fmt: skip

    def held_out() -> dict[str, float]:
        res = evaluate(policy, args.env, n_eval=args.n_eval, samples=args.eval_samples, temperature=0.6,
                       env_kwargs=rl.env_kwargs, max_new_tokens=rl.max_new_tokens)  # fmt: skip
        return {"pass@1": res.metrics["pass@1"], f"maj@{args.eval_samples}": res.metrics[f"maj@{args.eval_samples}"]}

    before = held_out()

    # 2. TTRL on the test split: the "ttrl" transform replaces the answer reward by the group's vote
    with GRPOTrainer(policy, args.env, rl) as trainer:
        summary = trainer.train()
    after = held_out()
    ratios = [round(m["reward/ttrl/majority_ratio"], 3) for m in trainer.history]
    return {"before": before, "after": after, "majority_ratio": ratios, "train": summary}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
