"""GRPO-family training on the search env: SFT warm start, then RL with any estimator.

    python examples/train_search_grpo.py --estimator gigpo --steps 20
    python examples/train_search_grpo.py --dapo            # clip-higher 0.2/0.28 + dynamic sampling
    python examples/train_search_grpo.py --loss-agg seq-mean-token-sum-norm   # Dr. GRPO aggregation

Prints held-out (test split) success before and after RL.
"""

from __future__ import annotations

import argparse
import json

import torch

from creditgym.agents import tiny
from creditgym.agents.offline import expert_episodes
from creditgym.trainers import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer
from creditgym.trainers.evaluate import evaluate


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="creditgym/SearchEasy-v0")
    ap.add_argument("--estimator", default="turn_return")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--expert-episodes", type=int, default=256)
    ap.add_argument("--sft-epochs", type=int, default=4)
    ap.add_argument("--n-eval", type=int, default=64)
    ap.add_argument("--dapo", action="store_true", help="clip-higher 0.2/0.28 and dynamic sampling")
    ap.add_argument("--loss-agg", default="token-mean")
    ap.add_argument("--kl-coef", type=float, default=0.0)
    ap.add_argument("--hidden", type=int, default=128, help="tiny model width")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="logs, episodes and checkpoints go here")
    args = ap.parse_args(argv)
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
        seed=args.seed, out_dir=args.out,
        loss_norm_const=6 * 48 if args.loss_agg == "seq-mean-token-sum-norm" else None,
        **({"clip_eps_low": 0.2, "clip_eps_high": 0.28, "dynamic_sampling": True, "allow_short_batch": True} if args.dapo else {}),
    )  # fmt: skip
    summary = GRPOTrainer(policy, args.env, rl).train()
    after = evaluate(policy, args.env, n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=48)
    return {"before": before.success, "after": after.success, "train": summary}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
