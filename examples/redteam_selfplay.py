"""Red-team self-play: attacker and defender trained together, one LoRA adapter per role.

    python examples/redteam_selfplay.py --steps 10
    python examples/redteam_selfplay.py --steps 10 --pool-every 2   # opponents from frozen snapshots

Each role is its own tiny policy wrapped in a LoRA adapter; the Collector plays matches with
`policies={"attacker": ..., "defender": ...}` and the trainer updates each role on its own episodes
(opponents never share a baseline: packing groups by (group_id, role)). With `--pool-every N` each
role is frozen into its opponent pool every N updates and every group trains one role against a
snapshot of the other drawn from its pool (the latest with probability 0.5; trainers/selfplay.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import tyro

from creditgym.agents import tiny
from creditgym.envs.redteam import REDTEAM_SELFPLAY
from creditgym.trainers import GRPOConfig, GRPOTrainer


@dataclass
class Args:
    env: str = REDTEAM_SELFPLAY
    steps: int = 10
    groups: int = 2
    group_size: int = 4
    max_new_tokens: int = 32
    hidden: int = 128
    layers: int = 2
    pool_every: int = 0
    """Snapshot each role into its opponent pool every N updates (0: both roles play their live selves)."""
    seed: int = 0
    out: str | None = None


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__)
    torch.set_num_threads(2)

    cfg = tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_layers=args.layers)
    policies = {role: tiny.build(seed=args.seed, config=cfg) for role in ("attacker", "defender")}
    rl = GRPOConfig(estimator="grpo", steps=args.steps, num_groups=args.groups, group_size=args.group_size,
                    lr=1e-3, max_new_tokens=args.max_new_tokens, lora=True, lora_r=8, kl_coef=0.01,
                    env_kwargs={"max_turns": 4}, seed=args.seed, out_dir=args.out,
                    opponent_pool_every=args.pool_every)  # fmt: skip
    trainer = GRPOTrainer(env_id=args.env, config=rl, policies=policies)
    summary = trainer.train()
    return {role: {k: v for k, v in summary.items() if k.startswith(role + "/")} for role in policies} | {
        "reward": summary.get("reward"), "steps": summary["steps"]}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
