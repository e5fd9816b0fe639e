"""SEMA on the harmless canary proxy: attack success per scripted victim level before and after.

    python examples/redteam_sema.py                       # tiny from-scratch model, CPU, a few minutes

SEMA (arXiv 2602.06854, METHODS.md section 8) trains an open-loop attacker: one reply is a numbered
plan of user messages, sent to the victim whatever it answers; the final answer is judged. Steps:

1. warm start: SFT on an imperfect scripted attacker (half its replies are random, unnumbered
   messages), so the model sometimes writes a plan and sometimes does not;
2. stage I, prefilling self-tuning: sample plans with the reply prefilled by "1. " and fine-tune on
   them (the format rate rises);
3. stage II: GRPO on 0.5 * format + 0.5 * IA * (CR + DL) / 2 against victim levels 1-2.

It reports success, reward and format rate against every victim level after each stage: L1-L2 are
trained on, L3 is held out, L0 yields to anyone and L4 never yields (a control that must stay at 0).
The goal is always the canary game: creditgym ships no harmful goals. Stage II's flags are
GRPOConfig's fields, spelled as in `creditgym train --trainer grpo` (`--list-flags`); its
`max_new_tokens` is also stage I's. On a GPU with a real model:
`--model HuggingFaceTB/SmolLM2-135M-Instruct --lora --lr 1e-5 --sft-lr 1e-5 --max-new-tokens 500
--n-generations 10 --group-size 28 --mini-batches 12` (SEMA's release settings), and `--victim-url` /
`--judge-url` point the env at an OpenAI-compatible victim and judge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated

import torch
import tyro

from creditgym.agents import Collector, ScriptedPolicy, pretrained, tiny
from creditgym.envs.redteam import REDTEAM
from creditgym.trainers import GRPOConfig, SFTConfig, SFTTrainer
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.sema import OPEN_LOOP_KWARGS, SEMAConfig, SEMATrainer, attack_success_by_level


@dataclass
class Args:
    train: Annotated[GRPOConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=lambda: GRPOConfig(
        steps=8, num_groups=4, group_size=8, lr=3e-4, max_new_tokens=96, tensorboard=False))  # fmt: skip
    """Stage II: every GRPOConfig field (`--lora` also applies to the warm start and stage I)"""
    model: str | None = None
    """A Hugging Face model id or folder (None: the tiny from-scratch model)."""
    hidden: int = 64
    layers: int = 2
    warm_episodes: int = 64
    """Scripted attacker episodes for the warm start (half of its replies random)."""
    warm_epochs: int = 16
    sft_lr: float = 3e-3
    """Learning rate of the warm start and of stage I's SFT."""
    n_generations: int = 8
    """Stage I: prefilled plans per goal (SEMA: 10)."""
    goals: int = 8
    """Stage I: training goals."""
    max_turns: int = 4
    n_eval: int = 16
    """Held-out episodes per victim level."""
    victim_url: str | None = None
    judge_url: str | None = None
    threads: int = 2
    """torch intra-op threads (two runs sharing 2 cores: 1 each, or OpenMP oversubscribes them)"""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    rl = args.train
    torch.set_num_threads(args.threads)
    if args.model:
        policy = pretrained.load(args.model)
    else:
        policy = tiny.build(seed=rl.seed, config=tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                                                                 num_layers=args.layers, num_heads=2, num_kv_heads=1))  # fmt: skip
    backends = {k: v for k, v in (("victim", "openai" if args.victim_url else None), ("victim_url", args.victim_url),
                                  ("judge", "openai" if args.judge_url else None), ("judge_url", args.judge_url)) if v}  # fmt: skip
    env_kwargs = {**OPEN_LOOP_KWARGS, "max_turns": args.max_turns, **backends}

    def report() -> dict:
        return attack_success_by_level(policy, n_eval=args.n_eval, max_turns=args.max_turns,
                                       max_new_tokens=rl.max_new_tokens, env_kwargs=backends)  # fmt: skip

    # 1. warm start on an imperfect scripted attacker (training split, levels 1-2; LoRA if --lora)
    expert = ScriptedPolicy(REDTEAM, tokenizer=policy.tokenizer, epsilon=0.5, seed=rl.seed)
    warm = Collector(expert, REDTEAM, env_kwargs={**env_kwargs, "victim_level": (1, 2)}).collect(args.warm_episodes, seed=rl.seed)
    SFTTrainer(policy, SFTConfig(lr=args.sft_lr, epochs=args.warm_epochs, batch_episodes=16, lora=rl.lora), episodes=warm).train()
    warm_start = report()

    # 2 + 3. SEMA: prefilling self-tuning, then GRPO on the intent-drift-aware reward
    cfg = SEMAConfig(
        train_levels=(1, 2), max_turns=args.max_turns, n_generations=args.n_generations, self_tune_goals=args.goals,
        max_new_tokens=rl.max_new_tokens, self_tune_filter="format", seed=rl.seed, out_dir=rl.out_dir,
        sft=SFTConfig(lr=args.sft_lr, epochs=4, batch_episodes=16, lr_schedule="cosine", min_lr_ratio=0.1), rl=rl,
    )  # fmt: skip
    sema = SEMATrainer(policy, cfg, env_kwargs=backends)
    stage1 = sema.self_tune()
    after_stage1 = report()
    stage2 = sema.rl()
    after = report()
    return {"warm_start": warm_start, "after_self_tune": after_stage1, "after_rl": after,
            "self_tune": {k: stage1[k] for k in ("self_tune/plans", "self_tune/kept", "self_tune/format")},
            "rl": {k: v for k, v in stage2.items() if k in ("rl/reward", "rl/success", "rl/steps")}}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
