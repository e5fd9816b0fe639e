"""PPO with a learned critic and turn-level GAE on the tool-calling env.

    python examples/train_tools_ppo.py --steps 20 --level turn

The critic is a copy of the policy network with a scalar head; the clipped value loss follows
CleanRL (vf_coef 0.5, vf_clip 0.2). Prints held-out success before and after, and the critic's
explained variance.
"""

from __future__ import annotations

import argparse
import json

import torch

from creditgym.agents import tiny
from creditgym.trainers import PPOConfig, PPOTrainer
from creditgym.trainers.evaluate import evaluate


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="creditgym/Tools-v0")
    ap.add_argument("--level", default="turn", choices=["token", "turn", "hierarchical"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--n-eval", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    env_kwargs = {"difficulty": 1}

    cfg = tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_layers=args.layers)
    policy = tiny.build(seed=args.seed, config=cfg)
    before = evaluate(policy, args.env, n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=args.max_new_tokens)
    ppo = PPOConfig(
        steps=args.steps, num_groups=args.groups, group_size=args.group_size, lr=3e-4, critic_lr=1e-3,
        max_new_tokens=args.max_new_tokens, estimator_cfg={"level": args.level, "gamma": 1.0, "lam": 0.95},
        vf_coef=0.5, vf_clip=0.2, env_kwargs=env_kwargs, seed=args.seed, out_dir=args.out,
    )  # fmt: skip
    trainer = PPOTrainer(policy, args.env, ppo)
    summary = trainer.train()
    after = evaluate(policy, args.env, n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=args.max_new_tokens)
    return {"before": before.success, "after": after.success,
            "explained_variance": summary.get("explained_variance"), "train": summary}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
