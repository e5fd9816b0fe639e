"""Red-team self-play: attacker and defender trained together, one LoRA adapter per role.

    python examples/redteam_selfplay.py --steps 10
    python examples/redteam_selfplay.py --steps 10 --opponent-pool-every 2   # opponents from frozen snapshots

Each role is its own tiny policy wrapped in a LoRA adapter; the Collector plays matches with
`policies={"attacker": ..., "defender": ...}` and the trainer updates each role on its own episodes
(opponents never share a baseline: packing groups by (group_id, role)). With
`--opponent-pool-every N` each role is frozen into its opponent pool every N updates and every group
trains one role against a snapshot of the other drawn from its pool (the latest with probability
`--opponent-pool-latest-prob`, 0.5; trainers/selfplay.py). The RL flags are GRPOConfig's fields,
spelled as in `creditgym train --trainer grpo` (`--list-flags`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated

import torch
import tyro

from creditgym.envs.redteam import REDTEAM_SELFPLAY
from creditgym.trainers import GRPOConfig, GRPOTrainer
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.quickstart import QuickstartConfig, tiny_policy


@dataclass
class Args:
    train: Annotated[GRPOConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=lambda: GRPOConfig(
        estimator="grpo", steps=10, num_groups=2, group_size=4, lr=1e-3, max_new_tokens=32, lora=True, lora_r=8,
        kl_coef=0.01, env_kwargs={"max_turns": 4}))  # fmt: skip
    """RL: every GRPOConfig field"""
    env: str = REDTEAM_SELFPLAY
    hidden: int = 128
    """tiny model width"""
    layers: int = 2
    threads: int = 2
    """torch intra-op threads (two runs sharing 2 cores: 1 each, or OpenMP oversubscribes them)"""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    torch.set_num_threads(args.threads)

    # one tiny from-scratch policy per role, same initial weights
    model = QuickstartConfig(hidden_size=args.hidden, num_layers=args.layers, seed=args.train.seed)
    policies = {role: tiny_policy(model) for role in ("attacker", "defender")}
    trainer = GRPOTrainer(env_id=args.env, config=args.train, policies=policies)
    summary = trainer.train()
    return {role: {k: v for k, v in summary.items() if k.startswith(role + "/")} for role in policies} | {
        "reward": summary.get("reward"), "steps": summary["steps"]}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
