"""Train on your own env end to end: the GuessNumber env of examples/custom_env.py.

    python examples/custom_env_train.py --steps 20

SFT warm start on its scripted bisection expert (with epsilon-random guesses), then GRPO with the
turn-level `turn_return` estimator; held-out success before and after. The RL flags are
GRPOConfig's fields, spelled as in `creditgym train --trainer grpo` (`--list-flags`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
import tyro

from creditgym.sources import import_source
from creditgym.trainers import GRPOConfig, GRPOTrainer
from creditgym.trainers.evaluate import evaluate
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.quickstart import small_warm_start


@dataclass
class Args:
    train: Annotated[GRPOConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=lambda: GRPOConfig(
        estimator="turn_return", steps=20, num_groups=4, group_size=8, lr=5e-4, max_new_tokens=16,
        env_kwargs={"high": 32}))  # fmt: skip
    """RL: every GRPOConfig field"""
    hidden: int = 128
    """tiny model width"""
    layers: int = 2
    expert_episodes: int = 128
    """scripted-expert episodes (epsilon 0.3) of the SFT warm start"""
    sft_epochs: int = 3
    n_eval: int = 32
    """held-out tasks evaluated before and after RL"""
    threads: int = 2
    """torch intra-op threads (two runs sharing 2 cores: 1 each, or OpenMP oversubscribes them)"""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    rl = args.train
    torch.set_num_threads(args.threads)
    # examples/custom_env.py registers the env and its scripted expert (imported once per process)
    env_id = import_source(str(Path(__file__).with_name("custom_env.py"))).ENV_ID

    # 1. a tiny from-scratch model, warm-started by SFT on the env's own scripted expert
    policy = small_warm_start(env_id, rl.env_kwargs, rl.seed, args.hidden, args.layers, args.expert_episodes,
                              args.sft_epochs)  # fmt: skip
    kw = dict(n_eval=args.n_eval, env_kwargs=rl.env_kwargs, max_new_tokens=rl.max_new_tokens)
    before = evaluate(policy, env_id, **kw)

    # 2. GRPO with turn-level credit
    summary = GRPOTrainer(policy, env_id, rl).train()
    after = evaluate(policy, env_id, **kw)
    return {"before": before.success, "after": after.success, "train": summary}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
