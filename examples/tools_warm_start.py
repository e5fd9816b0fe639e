"""The tiny model's Tools warm start for the credit study: SFT, more SFT, then copy rehearsal.

The tiny model must copy 7-digit operands and unseen words from its prompt. An induction warm-up
with digit rows teaches it to (docs/design-notes.md, "Digit copying for Tools"), but SFT erodes
that again. Short copy rounds interleaved with SFT keep both. About 50 min on one CPU core:

    python examples/tools_warm_start.py --out WARM
    python examples/compare_credit.py --env creditgym/Tools-v0 --env-kwargs '{"difficulty": 2, "reward": "toolrl"}' \\
        --sft-dir WARM --metric reward --estimators grpo,rebn,pvd,turn_return --max-new-tokens 136

Stage 1 is compare_credit's own warm start with the same flags; stages 2 and 3 continue it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass

import torch
import tyro

from creditgym.agents.induction import InductionConfig, induction_warmup
from creditgym.agents.offline import expert_episodes
from creditgym.trainers.evaluate import evaluate
from creditgym.trainers.quickstart import QuickstartConfig, warm_start
from creditgym.trainers.sft import SFTConfig, SFTTrainer

ENV = "creditgym/Tools-v0"


@dataclass
class Args:
    out: str = "tools_warm_start"
    """where the warm start is saved (compare_credit's `--sft-dir`)"""
    difficulty: int = 2
    hidden: int = 128
    layers: int = 3
    induction_steps: int = 6000
    """stage 1: the induction warm-up (half its rows digits), then SFT on the expert at epsilon 0.3"""
    expert_episodes: int = 1024
    sft_epochs: int = 4
    more_episodes: int = 1024
    """stage 2: SFT on fresh expert episodes, 4 per step (more optimizer steps than stage 1's 16)"""
    more_epochs: int = 3
    more_lr: float = 2e-3
    rounds: int = 12
    """stage 3: rounds of (copy steps, then one SFT pass over a slice of the rehearsal pool)"""
    copy_steps: int = 40
    pool_episodes: int = 768
    round_episodes: int = 128
    n_eval: int = 48
    threads: int = 1


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__)
    torch.set_num_threads(args.threads)
    kw, t0 = {"difficulty": args.difficulty, "split": "train"}, time.perf_counter()
    log = lambda msg: print(f"{msg} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    qs = QuickstartConfig(env_id=ENV, hidden_size=args.hidden, num_layers=args.layers, induction_steps=args.induction_steps,
                          induction_digit_fraction=0.5, expert_episodes=args.expert_episodes, sft_epochs=args.sft_epochs,
                          epsilon=0.3, max_new_tokens=136, threads=args.threads)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        policy, _ = warm_start(qs, tmp, env_kwargs=kw)
    log("stage 1: warm start")
    fresh = expert_episodes(ENV, args.more_episodes, seed=7, tokenizer=policy.tokenizer, epsilon=0.3, env_kwargs=kw)
    sft = SFTConfig(lr=args.more_lr, epochs=args.more_epochs, batch_episodes=4, warmup_steps=5, seed=0, progress=False)
    SFTTrainer(policy, sft, episodes=fresh).train()
    log("stage 2: more SFT")
    pool = expert_episodes(ENV, args.pool_episodes, seed=21, tokenizer=policy.tokenizer, epsilon=0.3, env_kwargs=kw)
    copy: dict[str, float] = {}
    for r in range(args.rounds):
        copy = induction_warmup(policy.model, policy.tokenizer,
                                InductionConfig(steps=args.copy_steps, digit_fraction=0.5, seed=100 + r, lr=5e-4))  # fmt: skip
        start = (r * args.round_episodes) % len(pool)
        chunk = pool[start : start + args.round_episodes]
        SFTTrainer(policy, SFTConfig(lr=1e-3, epochs=1, batch_episodes=4, warmup_steps=0, seed=r, progress=False), episodes=chunk).train()
        log(f"stage 3: round {r + 1}/{args.rounds}, copy accuracy {copy['copy_accuracy']:.3f}")
    policy.save(args.out)
    test = evaluate(policy, ENV, n_eval=args.n_eval, env_kwargs={"difficulty": args.difficulty, "reward": "toolrl"},
                    split="test", max_new_tokens=136)  # fmt: skip
    return {"out": args.out, "copy_accuracy": copy.get("copy_accuracy"), "test_success": test.success,
            "test_toolrl_reward": test.reward, "tool_calls": test.metrics.get("tool_calls")}  # fmt: skip


if __name__ == "__main__":
    print(main())
