"""SEC: a self-evolving curriculum over Search's hop counts, against uniform sampling.

SEC ("Self-Evolving Curriculum for LLM Reasoning", arXiv 2505.14970) treats each task category as a
bandit arm whose value is the mean absolute advantage of its last groups: categories the policy
always or never solves give no learning signal and are sampled less. Both runs start from the same
warm-started tiny model and see the same number of episodes.

    python examples/curriculum_sec.py                  # hops=1 / hops=2 / hops=3 on Search-v0
    python examples/curriculum_sec.py --tau 0.4 --steps 40

Prints held-out success per category for SEC and uniform, and SEC's sampling share over steps.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import torch
import tyro

from creditgym.agents import tiny
from creditgym.agents.hf import HFPolicy
from creditgym.agents.offline import expert_episodes
from creditgym.envs.search import SEARCH
from creditgym.trainers import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer
from creditgym.trainers.evaluate import evaluate

CATEGORIES = {"hops=1": {"hops": [1, 1]}, "hops=2": {"hops": [2, 2]}, "hops=3": {"hops": [3, 3]}}


@dataclass
class Args:
    env: str = SEARCH
    steps: int = 20
    groups: int = 6
    group_size: int = 8
    alpha: float = 0.5
    """SEC's TD(0) step size (paper: 0.5)"""
    tau: float = 1.0
    """SEC's Boltzmann temperature (paper: 1.0 Countdown, 0.4 math)"""
    expert_episodes: int = 256
    sft_epochs: int = 4
    n_eval: int = 32
    """held-out tasks per category"""
    hidden: int = 128
    """tiny model width"""
    layers: int = 2
    max_new_tokens: int = 48
    seed: int = 0


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__)
    torch.set_num_threads(2)
    env_kwargs = {"topk": 1, "distractors": 0}

    # 1. one warm start (imperfect expert over all hop counts), copied for both runs
    cfg = tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_layers=args.layers)
    start = tiny.build(seed=args.seed, config=cfg)
    demos = expert_episodes(args.env, args.expert_episodes, seed=args.seed, tokenizer=start.tokenizer, epsilon=0.3,
                            env_kwargs=env_kwargs)  # fmt: skip
    SFTTrainer(start, SFTConfig(lr=1e-2, epochs=args.sft_epochs, warmup_steps=5), episodes=demos).train()

    def held_out(policy: HFPolicy) -> dict[str, float]:
        res = evaluate(policy, args.env, n_eval=args.n_eval, env_kwargs=env_kwargs, categories=CATEGORIES,
                       max_new_tokens=args.max_new_tokens)  # fmt: skip
        return {c: round(m["success"], 3) for c, m in res.by_category.items()}

    rows = {"start": held_out(start)}
    shares: list[dict[str, float]] = []
    # 2. the same RL budget with each curriculum
    for curriculum in ("uniform", "sec"):
        policy = HFPolicy(copy.deepcopy(start.model), start.tokenizer, seed=args.seed)
        rl = GRPOConfig(
            steps=args.steps, num_groups=args.groups, group_size=args.group_size, lr=5e-4,
            max_new_tokens=args.max_new_tokens, env_kwargs=env_kwargs, seed=args.seed, categories=CATEGORIES,
            curriculum=curriculum, curriculum_cfg={"alpha": args.alpha, "tau": args.tau} if curriculum == "sec" else {},
        )  # fmt: skip
        trainer = GRPOTrainer(policy, args.env, rl)
        trainer.train()
        rows[curriculum] = held_out(policy)
        if curriculum == "sec":
            shares = [{c: round(m.get(f"curriculum/share/{c}", 0.0), 2) for c in CATEGORIES} for m in trainer.history]
    return {"held_out_success": rows, "sec_share_per_step": shares}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
