"""GRPO-family training on the search env: SFT warm start, then RL with any estimator.

    python examples/train_search_grpo.py --estimator gigpo --steps 20
    python examples/train_search_grpo.py --clip-eps-high 0.28 --dynamic-sampling --allow-short-batch  # DAPO
    python examples/train_search_grpo.py --loss-agg seq-mean-token-sum-norm --loss-norm-const 288  # Dr. GRPO
    python examples/train_search_grpo.py --reward-transforms '["otc_grpo"]'   # OTC-GRPO: fewest searches
    python examples/train_search_grpo.py --max-staleness 1   # async: the next rollout overlaps this update

The RL flags are GRPOConfig's fields, spelled as in `creditgym train --trainer grpo` (`--list-flags`);
the others size the tiny model and its warm start. Prints held-out (test split) success before and
after RL, with searches per episode and tool productivity (correct answers per search).
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
        estimator="turn_return", steps=20, num_groups=8, group_size=8, lr=5e-4, max_new_tokens=48,
        env_kwargs={"topk": 1}))  # fmt: skip
    """RL: every GRPOConfig field (`--out-dir` keeps logs, episodes and checkpoints)"""
    env: str = SEARCH_EASY
    hidden: int = 128
    """tiny model width"""
    layers: int = 2
    expert_episodes: int = 256
    """imperfect scripted-expert episodes (epsilon 0.3) of the SFT warm start"""
    sft_epochs: int = 4
    n_eval: int = 64
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

    # 2. RL with the chosen estimator and loss
    summary = GRPOTrainer(policy, args.env, rl).train()
    after = evaluate(policy, args.env, **kw)
    return {"before": before.success, "after": after.success, "train": summary,
            "tools": {"before": before.metrics, "after": after.metrics}}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
