"""Train on your own env end to end: the GuessNumber env of examples/custom_env.py.

    python examples/custom_env_train.py --steps 20

SFT warm start on its scripted bisection expert (with epsilon-random guesses), then GRPO with the
turn-level `turn_return` estimator; held-out success before and after.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from creditgym.agents import tiny
from creditgym.agents.offline import expert_episodes
from creditgym.sources import import_source
from creditgym.trainers import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer
from creditgym.trainers.evaluate import evaluate


@dataclass
class Args:
    steps: int = 20
    groups: int = 4
    group_size: int = 8
    expert_episodes: int = 128
    sft_epochs: int = 3
    n_eval: int = 32
    hidden: int = 128
    layers: int = 2
    seed: int = 0


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__)
    torch.set_num_threads(2)
    # examples/custom_env.py registers the env and its scripted expert (imported once per process)
    env_id = import_source(str(Path(__file__).with_name("custom_env.py"))).ENV_ID
    env_kwargs = {"high": 32}

    cfg = tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_layers=args.layers)
    policy = tiny.build(seed=args.seed, config=cfg)
    demos = expert_episodes(env_id, args.expert_episodes, seed=args.seed, tokenizer=policy.tokenizer, epsilon=0.3,
                            env_kwargs=env_kwargs)  # fmt: skip
    SFTTrainer(policy, SFTConfig(lr=1e-2, epochs=args.sft_epochs, warmup_steps=5), episodes=demos).train()
    kw = dict(n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=16)
    before = evaluate(policy, env_id, **kw)
    rl = GRPOConfig(estimator="turn_return", steps=args.steps, num_groups=args.groups, group_size=args.group_size,
                    lr=5e-4, max_new_tokens=16, env_kwargs=env_kwargs, seed=args.seed)  # fmt: skip
    summary = GRPOTrainer(policy, env_id, rl).train()
    after = evaluate(policy, env_id, **kw)
    return {"before": before.success, "after": after.success, "train": summary}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
