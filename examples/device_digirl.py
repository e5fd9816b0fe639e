"""DigiRL (arXiv 2406.11896) on the offline phone simulator: offline, then online, vs filtered BC.

    python examples/device_digirl.py                       # a few minutes on 2 CPU cores (tiny model)
    python examples/device_digirl.py --model smollm2-135m-instruct --device cuda --n-noisy 512 --lr 1e-5 \
        --offline-iterations 30 --online-iterations 100 --max-new-tokens 128   # a real model on a GPU

1. A tiny from-scratch model gets a short SFT warm start on noisy-expert episodes (the quickstart's
   `warm_start`).
2. `collect_offline` writes the offline dataset (expert, noisy expert with eps 0.5, random, and the
   warm-started policy's own episodes) to `OUT/offline.jsonl`, the mix in `offline.manifest.json`.
3. From the same warm start: filtered BC (SFT on the successful trajectories), and DigiRL, evaluated
   after its offline iterations and again after its online iterations (replay buffer, fresh episodes).
Held-out success is measured on the env's test split (unseen tasks) with the same seeds for each.
The RL flags are DigiRLConfig's fields, spelled as in `creditgym train --trainer digirl`
(`--list-flags`); `--out-dir` is OUT (default: a temporary folder).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
import tyro

from creditgym.agents import HFPolicy
from creditgym.agents.base import Sampling
from creditgym.agents.offline import collect_offline
from creditgym.envs.device import DEVICE
from creditgym.trainers import DigiRLConfig, DigiRLTrainer, SFTConfig, SFTTrainer
from creditgym.trainers.digirl import filtered_bc
from creditgym.trainers.evaluate import evaluate
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.quickstart import small_warm_start


@dataclass
class Args:
    train: Annotated[DigiRLConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=lambda: DigiRLConfig(
        offline_iterations=4, online_iterations=4, episodes_per_iteration=8, actor_steps=4, lr=1e-3,
        max_new_tokens=48, env_kwargs={"difficulty": 1, "max_turns": 6}, tensorboard=False))  # fmt: skip
    """DigiRL: every DigiRLConfig field"""
    model: str = "tiny"
    """'tiny' (built from scratch) or a pretrained name / folder (agents/pretrained.py)."""
    device: str = "cpu"
    hidden: int = 128
    """tiny model width"""
    layers: int = 2
    warm_episodes: int = 32
    """noisy-expert episodes (eps 0.3) of the SFT warm start"""
    warm_epochs: int = 4
    warm_batch_episodes: int = 16
    """episodes per warm-start SFT step (4 learns Device's action format in fewer tokens)"""
    induction_steps: int = 0
    """induction warm-up steps before the warm start's SFT (the quickstart uses 900)"""
    sft_model: str | None = None
    """a saved warm start (an earlier run's OUT/warm_start/model): skips step 1's SFT"""
    bc_epochs: int = 2
    """SFT epochs of the filtered-BC baseline"""
    n_expert: int = 16
    """offline dataset: expert, noisy-expert, random and warm-started policy episodes"""
    n_noisy: int = 48
    n_random: int = 16
    n_policy: int = 16
    n_eval: int = 32
    """held-out tasks evaluated after each stage"""
    eval_temperature: float = 1.0
    """sampling temperature of those evaluations (0: greedy)"""
    threads: int = 2
    """torch intra-op threads (two runs sharing 2 cores: 1 each, or OpenMP oversubscribes them)"""


def clone(policy: HFPolicy) -> HFPolicy:
    return HFPolicy(copy.deepcopy(policy.model), policy.tokenizer, seed=policy.seed)


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    rl, kw = args.train, args.train.env_kwargs
    torch.set_num_threads(args.threads)
    out = Path(rl.out_dir or tempfile.mkdtemp(prefix="digirl_"))
    tiny = args.model == "tiny"  # learning rates: tiny from-scratch model vs a pretrained one

    # 1. warm start: SFT on noisy-expert episodes
    warm = small_warm_start(DEVICE, kw, rl.seed, args.hidden, args.layers, args.warm_episodes, args.warm_epochs,
                            args.sft_model, sft_lr=3e-3 if tiny else 1e-5, induction_steps=args.induction_steps,
                            sft_batch_episodes=args.warm_batch_episodes, model=args.model, device=args.device,
                            out_dir=out / "warm_start")  # fmt: skip
    evaluate_kw = dict(n_eval=args.n_eval, env_kwargs=kw, max_new_tokens=rl.max_new_tokens,
                       temperature=args.eval_temperature)
    results = {"warm_start": evaluate(warm, DEVICE, **evaluate_kw).success}

    # 2. the offline dataset
    data = collect_offline(DEVICE, out / "offline.jsonl", n_expert=args.n_expert, n_noisy=args.n_noisy,
                           n_random=args.n_random, policy=warm, n_policy=args.n_policy, env_kwargs=kw, seed=rl.seed,
                           sampling=Sampling(max_new_tokens=rl.max_new_tokens))  # fmt: skip

    # 3. filtered BC vs DigiRL, each from a copy of the warm start
    bc = clone(warm)
    SFTTrainer(bc, SFTConfig(lr=1e-3 if tiny else 1e-5, epochs=args.bc_epochs, batch_episodes=8, seed=rl.seed),
               episodes=filtered_bc(data)).train()  # fmt: skip
    results["filtered_bc"] = evaluate(bc, DEVICE, **evaluate_kw).success

    policy = clone(warm)
    trainer = DigiRLTrainer(policy, DEVICE, dataclasses.replace(rl, out_dir=str(out / "digirl")), episodes=data)
    while trainer.step_idx < rl.offline_iterations:
        trainer.step()
    results["digirl_offline"] = evaluate(policy, DEVICE, **evaluate_kw).success
    summary = trainer.train()
    results["digirl_online"] = evaluate(policy, DEVICE, **evaluate_kw).success
    return {"held_out_success": results, "n_eval": args.n_eval, "eval_temperature": args.eval_temperature,
            "split": "test", "offline_data": str(out / "offline.jsonl"), "train": summary}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
