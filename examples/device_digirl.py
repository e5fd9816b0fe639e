"""DigiRL (arXiv 2406.11896) on the offline phone simulator: offline, then online, vs filtered BC.

    python examples/device_digirl.py                       # a few minutes on 2 CPU cores (tiny model)
    python examples/device_digirl.py --model smollm2-135m-instruct --device cuda --n-noisy 512 \
        --offline-iterations 30 --online-iterations 100 --max-new-tokens 128   # a real model on a GPU

1. A tiny from-scratch model gets a short SFT warm start on noisy-expert episodes.
2. `collect_offline` writes the offline dataset (expert, noisy expert with eps 0.5, random, and the
   warm-started policy's own episodes) to `OUT/offline.jsonl`, the mix in `offline.manifest.json`.
3. From the same warm start: filtered BC (SFT on the successful trajectories), and DigiRL, evaluated
   after its offline iterations and again after its online iterations (replay buffer, fresh episodes).
Held-out success is measured on the env's test split (unseen tasks) with the same seeds for each.
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
from creditgym.trainers import DigiRLConfig, DigiRLTrainer, SFTConfig, SFTTrainer
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
    """noisy-expert episodes (eps 0.3) of the SFT warm start"""
    warm_epochs: int = 4
    bc_epochs: int = 2
    """SFT epochs of the filtered-BC baseline"""
    n_expert: int = 16
    n_noisy: int = 48
    n_random: int = 16
    n_policy: int = 16
    offline_iterations: int = 4
    online_iterations: int = 4
    episodes_per_iteration: int = 8
    actor_steps: int = 4
    max_new_tokens: int = 48
    n_eval: int = 32
    hidden: int = 128
    layers: int = 2
    seed: int = 0
    out: str | None = None


def clone(policy: HFPolicy) -> HFPolicy:
    return HFPolicy(copy.deepcopy(policy.model), policy.tokenizer, seed=policy.seed)


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__)
    torch.set_num_threads(2)
    out = Path(args.out or tempfile.mkdtemp(prefix="digirl_"))
    kw = {"difficulty": args.difficulty, "max_turns": args.max_turns}
    if args.model == "tiny":
        cfg = tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_layers=args.layers)
        warm = tiny.build(seed=args.seed, config=cfg).to(args.device)
    else:
        warm = pretrained.load(args.model, device=args.device, seed=args.seed)
    demos = expert_episodes(DEVICE, args.warm_episodes, seed=args.seed + 1, tokenizer=warm.tokenizer, epsilon=0.3, env_kwargs=kw)
    SFTTrainer(warm, SFTConfig(lr=3e-3 if args.model == "tiny" else 1e-5, epochs=args.warm_epochs, batch_episodes=8,
                               seed=args.seed), episodes=demos).train()  # fmt: skip
    evaluate_kw = dict(n_eval=args.n_eval, env_kwargs=kw, max_new_tokens=args.max_new_tokens)
    results = {"warm_start": evaluate(warm, DEVICE, **evaluate_kw).success}

    data = collect_offline(DEVICE, out / "offline.jsonl", n_expert=args.n_expert, n_noisy=args.n_noisy,
                           n_random=args.n_random, policy=warm, n_policy=args.n_policy, env_kwargs=kw, seed=args.seed,
                           sampling=Sampling(max_new_tokens=args.max_new_tokens))  # fmt: skip

    bc = clone(warm)
    SFTTrainer(bc, SFTConfig(lr=1e-3 if args.model == "tiny" else 1e-5, epochs=args.bc_epochs, batch_episodes=8,
                             seed=args.seed), episodes=filtered_bc(data)).train()  # fmt: skip
    results["filtered_bc"] = evaluate(bc, DEVICE, **evaluate_kw).success

    policy = clone(warm)
    rl = DigiRLConfig(offline_iterations=args.offline_iterations, online_iterations=args.online_iterations,
                      episodes_per_iteration=args.episodes_per_iteration, actor_steps=args.actor_steps,
                      lr=1e-3 if args.model == "tiny" else 1e-5, max_new_tokens=args.max_new_tokens, env_kwargs=kw,
                      seed=args.seed, out_dir=str(out / "digirl"), tensorboard=False)  # fmt: skip
    trainer = DigiRLTrainer(policy, DEVICE, rl, episodes=data)
    while trainer.step_idx < args.offline_iterations:
        trainer.step()
    results["digirl_offline"] = evaluate(policy, DEVICE, **evaluate_kw).success
    summary = trainer.train()
    results["digirl_online"] = evaluate(policy, DEVICE, **evaluate_kw).success
    return {"held_out_success": results, "n_eval": args.n_eval, "split": "test", "offline_data": str(out / "offline.jsonl"),
            "train": summary}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
