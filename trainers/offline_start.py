"""The shared start of the offline-RL comparisons (examples/device_digirl.py and device_digiq.py).

A warm start (`quickstart.small_warm_start`), the offline dataset (`agents.offline.collect_offline`:
expert, noisy expert, random and the warm-started policy's own episodes, mixed as METHODS.md 6
describes) and the filtered behaviour-cloning baseline (SFT of a copy of the warm start on the
dataset's successful trajectories), each evaluated on the env's test split. The method under study
then starts from another copy of the same warm start on the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from creditgym.agents.base import Sampling
from creditgym.agents.hf import HFPolicy
from creditgym.agents.offline import collect_offline
from creditgym.trainers.digirl import filtered_bc
from creditgym.trainers.evaluate import evaluate
from creditgym.trainers.quickstart import small_warm_start
from creditgym.trainers.sft import SFTConfig, SFTTrainer
from creditgym.trajectory import Episode

__all__ = ["OfflineStart", "OfflineStartArgs", "offline_start"]


@dataclass
class OfflineStartArgs:
    """The flags of the warm start, the offline dataset and the evaluation (an example's `Args`
    subclasses this and adds its trainer's Config)."""

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
    """a saved warm start (an earlier run's OUT/warm_start/model): skips the warm start's SFT"""
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


@dataclass
class OfflineStart:
    """What `offline_start` made: the warm start, the dataset, and held-out success so far
    (`results`: `warm_start`, `filtered_bc`)."""

    warm: HFPolicy
    data: list[Episode]
    env_id: str
    evaluate_kw: dict[str, Any]
    results: dict[str, float] = field(default_factory=dict)

    def success(self, policy: HFPolicy) -> float:
        """Held-out success of `policy` with the same tasks and sampling as every other arm."""
        return evaluate(policy, self.env_id, **self.evaluate_kw).success


def offline_start(
    args: OfflineStartArgs, env_id: str, env_kwargs: dict[str, Any], seed: int, max_new_tokens: int, out: Path
) -> OfflineStart:
    """Warm start (kept in `out/warm_start/`), offline dataset (`out/offline.jsonl` and its manifest)
    and filtered BC, each evaluated. Learning rates: 3e-3 (SFT) and 1e-3 (BC) for the tiny model,
    1e-5 for a pretrained one."""
    tiny = args.model == "tiny"
    warm = small_warm_start(env_id, env_kwargs, seed, args.hidden, args.layers, args.warm_episodes, args.warm_epochs,
                            args.sft_model, sft_lr=3e-3 if tiny else 1e-5, induction_steps=args.induction_steps,
                            sft_batch_episodes=args.warm_batch_episodes, model=args.model, device=args.device,
                            out_dir=out / "warm_start")  # fmt: skip
    evaluate_kw = dict(n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=max_new_tokens,
                       temperature=args.eval_temperature)  # fmt: skip
    start = OfflineStart(warm, [], env_id, evaluate_kw)
    start.results["warm_start"] = start.success(warm)
    start.data = collect_offline(env_id, out / "offline.jsonl", n_expert=args.n_expert, n_noisy=args.n_noisy,
                                 n_random=args.n_random, policy=warm, n_policy=args.n_policy, env_kwargs=env_kwargs,
                                 seed=seed, sampling=Sampling(max_new_tokens=max_new_tokens))  # fmt: skip
    bc = warm.clone()
    SFTTrainer(bc, SFTConfig(lr=1e-3 if tiny else 1e-5, epochs=args.bc_epochs, batch_episodes=8, seed=seed),
               episodes=filtered_bc(start.data)).train()  # fmt: skip
    start.results["filtered_bc"] = start.success(bc)
    return start
