"""SEC: a self-evolving curriculum over Search's hop counts, against uniform sampling.

SEC ("Self-Evolving Curriculum for LLM Reasoning", arXiv 2505.14970) treats each task category as a
bandit arm whose value is the mean absolute advantage of its last groups: categories the policy
always or never solves give no learning signal and are sampled less. Both runs start from the same
warm-started tiny model and see the same number of episodes.

    python examples/curriculum_sec.py                  # hops=1 / hops=2 / hops=3 on Search-v0
    python examples/curriculum_sec.py --curriculum-cfg '{"alpha": 0.5, "tau": 0.4}' --steps 40

The RL flags are GRPOConfig's fields, spelled as in `creditgym train --trainer grpo` (`--list-flags`);
`--curriculum-cfg` holds SEC's TD(0) step size alpha (paper: 0.5) and Boltzmann temperature tau
(paper: 1.0 Countdown, 0.4 math). Prints held-out success per category for SEC and uniform, and
SEC's sampling share over steps.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Annotated

import torch
import tyro

from creditgym.agents.hf import HFPolicy
from creditgym.envs.search import SEARCH
from creditgym.trainers import GRPOConfig, GRPOTrainer
from creditgym.trainers.evaluate import evaluate
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.quickstart import small_warm_start


@dataclass
class Args:
    train: Annotated[GRPOConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=lambda: GRPOConfig(
        steps=20, num_groups=6, group_size=8, lr=5e-4, max_new_tokens=48, env_kwargs={"topk": 1, "distractors": 0},
        categories={"hops=1": {"hops": [1, 1]}, "hops=2": {"hops": [2, 2]}, "hops=3": {"hops": [3, 3]}},
        curriculum_cfg={"alpha": 0.5, "tau": 1.0}))  # fmt: skip
    """RL: every GRPOConfig field; `curriculum` is set per run (uniform, then sec)"""
    env: str = SEARCH
    hidden: int = 128
    """tiny model width"""
    layers: int = 2
    expert_episodes: int = 256
    """imperfect scripted-expert episodes (epsilon 0.3, all hop counts) of the SFT warm start"""
    sft_epochs: int = 4
    n_eval: int = 32
    """held-out tasks per category"""
    sft_model: str | None = None
    """start both runs from this saved model (e.g. the quickstart's runs/quickstart/sft_model, with its
    prompt in --env-kwargs: "prompt_path": "trainers/data/quickstart_prompt.txt") instead of the
    small warm start above"""
    threads: int = 2
    """torch intra-op threads (two runs sharing 2 cores: 1 each, or OpenMP oversubscribes them)"""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    rl = args.train
    torch.set_num_threads(args.threads)

    # 1. one warm start (imperfect expert over all hop counts), copied for both runs
    start = small_warm_start(args.env, rl.env_kwargs, rl.seed, args.hidden, args.layers, args.expert_episodes,
                             args.sft_epochs, sft_model=args.sft_model)  # fmt: skip

    def held_out(policy: HFPolicy) -> dict[str, float]:
        res = evaluate(policy, args.env, n_eval=args.n_eval, env_kwargs=rl.env_kwargs, categories=rl.categories,
                       max_new_tokens=rl.max_new_tokens)  # fmt: skip
        return {c: round(m["success"], 3) for c, m in res.by_category.items()}

    rows = {"start": held_out(start)}
    shares: list[dict[str, float]] = []
    # 2. the same RL budget with each curriculum (the SEC knobs apply to SEC only)
    for curriculum in ("uniform", "sec"):
        policy = start.clone()
        cfg = dataclasses.replace(rl, curriculum=curriculum, curriculum_cfg=rl.curriculum_cfg if curriculum == "sec" else {})
        with GRPOTrainer(policy, args.env, cfg) as trainer:
            trainer.train()
        rows[curriculum] = held_out(policy)
        if curriculum == "sec":
            shares = [{c: round(m.get(f"curriculum/share/{c}", 0.0), 2) for c in rl.categories} for m in trainer.history]
    return {"held_out_success": rows, "sec_share_per_step": shares}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
