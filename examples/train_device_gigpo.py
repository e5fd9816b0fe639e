"""GiGPO (arXiv 2505.10978) on the offline device-control env: anchor-state grouping of turns.

    python examples/train_device_gigpo.py --steps 20

GiGPO groups turns taken from the same env state (`info["state_key"]`) across a group's episodes
and mixes that step-level advantage with the episode-level one (omega).
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
    ap.add_argument("--env", default="creditgym/Device-v0")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--expert-episodes", type=int, default=64)
    ap.add_argument("--sft-epochs", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=32)
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
