"""Compare credit estimators on one multi-turn env from one shared SFT checkpoint.

    python examples/compare_credit.py --estimators grpo,gigpo,turn_return,igpo --seeds 0,1,2 --steps 24

The warm start is the quickstart's (tiny model, induction warm-up, SFT on an imperfect expert), made
once and saved; every run loads it and gets the same sample budget (steps x groups x group size
episodes). The table shows test-split success vs samples, mean and spread over seeds. igpo needs
gold-answer probes, which the trainer requests from the estimator's `needs`. The RL flags are
GRPOConfig's fields, spelled as in `creditgym train --trainer grpo` (`--list-flags`), with the
quickstart's RL defaults; `--estimator` and `--seed` are set per run from `--estimators` and `--seeds`.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

import torch
import tyro

from creditgym.agents.hf import HFPolicy
from creditgym.trainers import GRPOConfig, GRPOTrainer
from creditgym.trainers.evaluate import evaluate
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.quickstart import QuickstartConfig, warm_start


@dataclass
class Args:
    train: Annotated[GRPOConfig, tyro.conf.OmitArgPrefixes] = field(
        default_factory=lambda: QuickstartConfig().rl_config(steps=24, num_groups=8, group_size=8))
    """RL: every GRPOConfig field"""
    estimators: str = "grpo,gigpo,turn_return,igpo"
    seeds: str = "0,1,2"
    eval_every: int = 8
    n_eval: int = 200
    hidden: int | None = None
    """tiny model width (None: the quickstart's, as for the knobs below)"""
    layers: int | None = None
    expert_episodes: int | None = None
    sft_epochs: int | None = None
    induction_steps: int | None = None


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    rl = args.train
    overrides = {"hidden_size": args.hidden, "num_layers": args.layers, "expert_episodes": args.expert_episodes,
                 "sft_epochs": args.sft_epochs, "induction_steps": args.induction_steps}  # fmt: skip
    qs = replace(QuickstartConfig(progress=False), **{k: v for k, v in overrides.items() if v is not None})
    torch.set_num_threads(qs.threads)
    ev = {**qs.eval_kwargs(), "n_eval": args.n_eval}
    results: dict[str, dict[int, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        policy, _ = warm_start(qs, tmp)
        ckpt = policy.save(Path(tmp) / "sft")
        start = evaluate(policy, qs.env_id, **ev).success
        for name in args.estimators.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                policy = HFPolicy.from_pretrained(ckpt, seed=seed)
                tr = GRPOTrainer(policy, qs.env_id, replace(rl, estimator=name, seed=seed))
                curve = [start]
                while tr.step_idx < tr.total_steps:
                    tr.step()
                    if tr.step_idx % args.eval_every == 0 or tr.step_idx == tr.total_steps:
                        curve.append(evaluate(policy, qs.env_id, **ev).success)
                tr.collector.close()
                results.setdefault(name, {})[seed] = curve
    per_round = rl.num_groups * rl.group_size
    evals = sorted({*range(args.eval_every, rl.steps + 1, args.eval_every), rl.steps})
    samples = [0] + [s * per_round for s in evals]
    table = {}
    for name, by_seed in results.items():
        curves = list(by_seed.values())
        table[name] = [
            {"samples": samples[i], "mean": statistics.mean(c[i] for c in curves),
             "sd": statistics.pstdev([c[i] for c in curves])}
            for i in range(len(curves[0]))
        ]  # fmt: skip
    return {"env_id": qs.env_id, "start_success": start, "budget_episodes": rl.steps * per_round, "table": table}


if __name__ == "__main__":
    out = main()
    for name, rows in out["table"].items():
        print(name.ljust(12), "  ".join(f"{r['samples']:>5}: {r['mean']:.3f}±{r['sd']:.3f}" for r in rows))
    print(json.dumps(out, indent=1))
