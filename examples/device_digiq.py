"""Digi-Q (arXiv 2502.15760) on the offline phone simulator: a Q-function on frozen features and
best-of-N policy extraction, vs filtered BC on the same data; and how often Q prefers the expert.

    python examples/device_digiq.py                        # a few minutes on 2 CPU cores (tiny model)
    python examples/device_digiq.py --model smollm2-135m-instruct --device cuda --n-noisy 512 \
        --critic-epochs 40 --actor-steps 200 --n-candidates 16 --max-new-tokens 128   # a real model on a GPU

1. A tiny from-scratch model gets a short SFT warm start on noisy-expert episodes.
2. `collect_offline` writes the offline dataset (expert, noisy expert with eps 0.5, random, and the
   warm-started policy's episodes) to `OUT/offline.jsonl`.
3. From the same warm start: filtered BC (SFT on the successes) and Digi-Q (representation
   fine-tuning of a copy, TD on its frozen features, best-of-N extraction into the policy).
Reported: held-out (test-split) success of each, and on held-out expert states the share where Q
ranks the expert's action above a random well-formed one (0.5 is chance).
"""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from creditgym.agents import HFPolicy, pretrained, tiny
from creditgym.agents.base import Sampling
from creditgym.agents.offline import collect_offline, expert_episodes
from creditgym.envs.device import DEVICE
from creditgym.trainers import DigiQConfig, DigiQTrainer, SFTConfig, SFTTrainer
from creditgym.trainers.digirl import filtered_bc
from creditgym.trainers.evaluate import evaluate


@dataclass
class Args:
    model: str = "tiny"
    """'tiny' (built from scratch) or a pretrained name / folder (agents/pretrained.py)."""
    device: str = "cpu"
    difficulty: int = 1
    max_turns: int = 6
    warm_episodes: int = 32
    warm_epochs: int = 4
    bc_epochs: int = 2
    """SFT epochs of the filtered-BC baseline"""
    n_expert: int = 16
    n_noisy: int = 48
    n_random: int = 16
    n_policy: int = 16
    critic_epochs: int = 20
    actor_steps: int = 12
    n_candidates: int = 4
    max_new_tokens: int = 48
    n_eval: int = 32
    n_rank_episodes: int = 16
    """held-out expert episodes whose states measure Q's ranking"""
    hidden: int = 128
    layers: int = 2
    seed: int = 0
    out: str | None = None


def clone(policy: HFPolicy) -> HFPolicy:
    return HFPolicy(copy.deepcopy(policy.model), policy.tokenizer, seed=policy.seed)


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__)
    torch.set_num_threads(2)
    out = Path(args.out or tempfile.mkdtemp(prefix="digiq_"))
    kw = {"difficulty": args.difficulty, "max_turns": args.max_turns}
    tiny_model = args.model == "tiny"
    if tiny_model:
        cfg = tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_layers=args.layers)
        warm = tiny.build(seed=args.seed, config=cfg).to(args.device)
    else:
        warm = pretrained.load(args.model, device=args.device, seed=args.seed)
    demos = expert_episodes(DEVICE, args.warm_episodes, seed=args.seed + 1, tokenizer=warm.tokenizer, epsilon=0.3, env_kwargs=kw)
    SFTTrainer(warm, SFTConfig(lr=3e-3 if tiny_model else 1e-5, epochs=args.warm_epochs, batch_episodes=8, seed=args.seed),
               episodes=demos).train()  # fmt: skip
    evaluate_kw = dict(n_eval=args.n_eval, env_kwargs=kw, max_new_tokens=args.max_new_tokens)
    results = {"warm_start": evaluate(warm, DEVICE, **evaluate_kw).success}

    data = collect_offline(DEVICE, out / "offline.jsonl", n_expert=args.n_expert, n_noisy=args.n_noisy,
                           n_random=args.n_random, policy=warm, n_policy=args.n_policy, env_kwargs=kw, seed=args.seed,
                           sampling=Sampling(max_new_tokens=args.max_new_tokens))  # fmt: skip

    bc = clone(warm)
    SFTTrainer(bc, SFTConfig(lr=1e-3 if tiny_model else 1e-5, epochs=args.bc_epochs, batch_episodes=8,
                             seed=args.seed), episodes=filtered_bc(data)).train()  # fmt: skip
    results["filtered_bc"] = evaluate(bc, DEVICE, **evaluate_kw).success

    policy = clone(warm)
    dq = DigiQConfig(critic_epochs=args.critic_epochs, actor_steps=args.actor_steps, n_candidates=args.n_candidates,
                     repr_lr=1e-3 if tiny_model else 2e-5, lr=1e-3 if tiny_model else 1e-5,
                     max_new_tokens=args.max_new_tokens, env_kwargs=kw, seed=args.seed, out_dir=str(out / "digiq"),
                     tensorboard=False)  # fmt: skip
    trainer = DigiQTrainer(policy, DEVICE, dq, episodes=data)
    summary = trainer.train()
    results["digiq"] = evaluate(policy, DEVICE, **evaluate_kw).success
    held = expert_episodes(DEVICE, args.n_rank_episodes, seed=args.seed + 2, tokenizer=warm.tokenizer,
                           env_kwargs={**kw, "split": "test"})  # fmt: skip
    return {"held_out_success": results, "q_ranks_expert_above_random": trainer.q_ranking(held, seed=args.seed),
            "n_eval": args.n_eval, "split": "test", "offline_data": str(out / "offline.jsonl"), "train": summary}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
