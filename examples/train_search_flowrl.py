"""FlowRL vs GRPO on the search env from one warm start (FlowRL: arXiv 2509.15207).

    python examples/train_search_flowrl.py                   # tiny model, the quickstart's warm start, CPU
    python examples/train_search_flowrl.py --model runs/quickstart/sft_model --device cuda --lora --lr 1e-5

FlowRL (`GRPOConfig(objective="flowrl")`) matches the reward-tilted reference distribution instead
of maximising reward, so it should keep more of the distinct ways of succeeding. The warm start is
the quickstart's (tiny model, induction warm-up, SFT on an imperfect expert), or `--model` (a Hugging
Face folder or a pretrained name). Each objective trains from the same weights with the same sample
budget; each test-split task is then played `--samples` times, and the table shows success and the
distinct successful action sequences per task. The RL flags are GRPOConfig's fields, spelled as in
`creditgym train --trainer grpo` (`--list-flags`), with the quickstart's RL defaults.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
import tyro

from creditgym.agents import pretrained
from creditgym.agents.hf import HFPolicy
from creditgym.trainers import GRPOConfig, GRPOTrainer
from creditgym.trainers.evaluate import EvalResult, evaluate
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.quickstart import QuickstartConfig, warm_start
from creditgym.trajectory import episode_success


@dataclass
class Args:
    train: Annotated[GRPOConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=lambda: QuickstartConfig().rl_config(
        estimator="grpo", estimator_cfg={}, steps=60, tensorboard=False, save_episodes=False))  # fmt: skip
    """RL: every GRPOConfig field (`--objective` is set per run; FlowRL's rhat is the episode's mean
    advantage, and grpo's is the paper's group-normalised return; lr 1e-3 for the tiny model, the paper
    uses 1e-6 for 7B)"""
    objectives: str = "pg,flowrl"
    """comma-separated GRPOConfig objectives, each trained from the same warm start"""
    n_eval: int = 100
    samples: int = 4
    """plays of each test task (distinct successful action sequences are counted over them)"""
    model: str | None = None
    """an HF folder or pretrained name instead of the tiny warm start"""
    device: str = "cpu"
    hidden: int | None = None
    """tiny model width (None: the quickstart's, as for the knobs below)"""
    layers: int | None = None
    expert_episodes: int | None = None
    sft_epochs: int | None = None
    induction_steps: int | None = None


def distinct_successes(result: EvalResult) -> float:
    """Mean over tasks of the number of distinct action sequences among that task's successful plays."""
    per_task: dict[str, set[tuple[str, ...]]] = {}
    for e in result.episodes:
        wins = per_task.setdefault(e.group_id, set())
        if episode_success(e) >= 1.0:
            wins.add(tuple(t.action_text for t in e.turns))
    return sum(len(s) for s in per_task.values()) / max(len(per_task), 1)


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    rl = args.train
    overrides = {"hidden_size": args.hidden, "num_layers": args.layers, "expert_episodes": args.expert_episodes,
                 "sft_epochs": args.sft_epochs, "induction_steps": args.induction_steps}  # fmt: skip
    qs = dataclasses.replace(QuickstartConfig(progress=False, seed=rl.seed, max_new_tokens=rl.max_new_tokens),
                             **{k: v for k, v in overrides.items() if v is not None})  # fmt: skip
    torch.set_num_threads(qs.threads)
    ev = {**qs.eval_kwargs(), "n_eval": args.n_eval, "samples": args.samples}
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # 1. the warm start, saved so that every objective starts from the same weights
        policy = pretrained.load(args.model, device=args.device) if args.model else warm_start(qs, tmp)[0]
        warm = policy.save(Path(tmp) / "warm")
        start = evaluate(policy, qs.env_id, **ev)
        rows["start"] = {"success": start.success, "distinct_successes": distinct_successes(start)}
        # 2. each objective: same weights, same episodes per step
        for objective in args.objectives.split(","):
            policy = HFPolicy.from_pretrained(warm, seed=rl.seed, device=args.device)
            summary = GRPOTrainer(policy, qs.env_id, dataclasses.replace(rl, objective=objective)).train()
            after = evaluate(policy, qs.env_id, **ev)
            rows[objective] = {"success": after.success, "distinct_successes": distinct_successes(after),
                               "train_reward": summary.get("reward", float("nan"))}  # fmt: skip
    return {"env_id": qs.env_id, "n_eval": args.n_eval, "samples": args.samples, "rows": rows}


if __name__ == "__main__":
    out = main()
    for name, row in out["rows"].items():
        print(
            f"{name:>8}  success {row['success']:.3f}  distinct successes/task {row['distinct_successes']:.2f}"
        )
    print(json.dumps(out, indent=1))
