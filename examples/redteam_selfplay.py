"""Red-team self-play: attacker and defender trained together, one LoRA adapter per role.

    python examples/redteam_selfplay.py --steps 10

Each role is its own tiny policy wrapped in a LoRA adapter; the Collector plays matches with
`policies={"attacker": ..., "defender": ...}` and the trainer updates each role on its own episodes
(opponents never share a baseline: packing groups by (group_id, role)).
"""

from __future__ import annotations

import argparse
import json

import torch

from creditgym.agents import tiny
from creditgym.trainers import GRPOConfig, GRPOTrainer


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="creditgym/RedTeamSelfPlay-v0")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    cfg = tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_layers=args.layers)
    policies = {role: tiny.build(seed=args.seed, config=cfg) for role in ("attacker", "defender")}
    rl = GRPOConfig(estimator="grpo", steps=args.steps, num_groups=args.groups, group_size=args.group_size,
                    lr=1e-3, max_new_tokens=args.max_new_tokens, lora=True, lora_r=8, kl_coef=0.01,
                    env_kwargs={"max_turns": 4}, seed=args.seed, out_dir=args.out)  # fmt: skip
    trainer = GRPOTrainer(env_id=args.env, config=rl, policies=policies)
    summary = trainer.train()
    return {role: {k: v for k, v in summary.items() if k.startswith(role + "/")} for role in policies} | {
        "reward": summary.get("reward"), "steps": summary["steps"]}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
