"""PPO with a learned critic and turn-level GAE on the tool-calling env.

    python examples/train_tools_ppo.py --steps 20 --estimator-cfg '{"level": "token", "gamma": 1.0, "lam": 1.0}'
    python examples/train_tools_ppo.py --env-kwargs '{"difficulty": 1, "otc": "ppo"}'  # OTC-PPO (env side)
    python examples/train_tools_ppo.py --reward-transforms '["otc_grpo"]'   # OTC-GRPO: fewest correct calls

The RL flags are PPOConfig's fields, spelled as in `creditgym train --trainer ppo` (`--list-flags`).
The critic is a copy of the policy network with a scalar head; the clipped value loss follows
CleanRL (vf_coef 0.5, vf_clip 0.2). Prints held-out success before and after, the critic's
explained variance, and tool calls per episode and tool productivity (correct answers per call).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated

import torch
import tyro

from creditgym.envs.tools import TOOLS
from creditgym.trainers import PPOConfig, PPOTrainer
from creditgym.trainers.evaluate import evaluate
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.quickstart import QuickstartConfig, tiny_policy


@dataclass
class Args:
    train: Annotated[PPOConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=lambda: PPOConfig(
        steps=20, num_groups=4, group_size=4, lr=3e-4, critic_lr=1e-3, max_new_tokens=48,
        estimator_cfg={"level": "turn", "gamma": 1.0, "lam": 0.95}, vf_coef=0.5, vf_clip=0.2,
        env_kwargs={"difficulty": 1}))  # fmt: skip
    """RL: every PPOConfig field; `estimator_cfg["level"]` is token, turn or hierarchical GAE"""
    env: str = TOOLS
    hidden: int = 128
    """tiny model width"""
    layers: int = 2
    n_eval: int = 32
    """held-out tasks evaluated before and after RL"""
    threads: int = 2
    """torch intra-op threads (two runs sharing 2 cores: 1 each, or OpenMP oversubscribes them)"""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    ppo = args.train
    torch.set_num_threads(args.threads)

    # a tiny from-scratch model, trained by PPO alone (no warm start)
    policy = tiny_policy(QuickstartConfig(hidden_size=args.hidden, num_layers=args.layers, seed=ppo.seed))
    kw = dict(n_eval=args.n_eval, env_kwargs=ppo.env_kwargs, max_new_tokens=ppo.max_new_tokens)
    before = evaluate(policy, args.env, **kw)
    summary = PPOTrainer(policy, args.env, ppo).train()
    after = evaluate(policy, args.env, **kw)
    return {"before": before.success, "after": after.success,
            "explained_variance": summary.get("explained_variance"), "train": summary,
            "tools": {"before": before.metrics, "after": after.metrics}}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
