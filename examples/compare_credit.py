"""Compare credit estimators on one multi-turn env from one shared SFT checkpoint.

    python examples/compare_credit.py --estimators grpo,gigpo,turn_return,igpo --seeds 0,1,2 --steps 24
    python examples/compare_credit.py --env creditgym/Tools-v0 --env-kwargs '{"difficulty": 2}' \\
        --estimators grpo,rebn,pvd,turn_return --json tools2.json

The warm start (the quickstart's: tiny model, induction warm-up, SFT on an imperfect expert) is made
once and saved (`--sft-dir`, shared by processes); every run gets steps x groups x group size episodes
(fair for 1x estimators: the grpo family, rebn, gigpo, pvd). The table: test success (or reward,
`--metric reward`) vs training episodes over seeds, episodes to `--threshold`, the area under the curve
and the last evaluation's metrics (turns, share of invalid actions, tool calls: a policy whose
format breaks shows here); `--merge` joins the `--json` reports of a study split over processes.
RL flags are GRPOConfig's (`creditgym train --trainer grpo --list-flags`), the quickstart's defaults.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import tyro

from creditgym.agents.hf import HFPolicy
from creditgym.benchmarks.learning import accuracy_vs_learning, merge_studies, summarize
from creditgym.trainers import GRPOConfig, GRPOTrainer
from creditgym.trainers.evaluate import evaluate
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.trainers.quickstart import QuickstartConfig, warm_start
from creditgym.trajectory import episode_metrics


@dataclass
class Args:
    train: Annotated[GRPOConfig, tyro.conf.OmitArgPrefixes] = field(
        default_factory=lambda: QuickstartConfig().rl_config(steps=24, num_groups=8, group_size=8))
    """RL: every GRPOConfig field"""
    estimators: str = "grpo,gigpo,turn_return,igpo"
    seeds: str = "0,1,2"
    env: str | None = None
    """env id (None: the quickstart's SearchEasy with its train/test settings); its `--env-kwargs`
    (default none) serve training (train split), the warm start and evaluation (test split)"""
    eval_every: int = 8
    n_eval: int = 200
    metric: Literal["success", "reward"] = "success"
    """what the curves track on the test split: "success" or "reward" (the env's mean episode reward,
    e.g. Search's answer F1, a signal before exact matches appear)"""
    threshold: float | None = None
    """success level for "episodes to threshold" (None: halfway from the start to the best mean)"""
    json: str | None = None
    """write the result here as well"""
    merge: str | None = None
    """comma-separated `--json` reports of one study split over processes (same warm start, budget,
    evaluations; other estimators or seeds): one table, no training"""
    accuracy: str | None = None
    """a `creditgym bench accuracy --json` report of the same env: adds the rank correlation between
    each estimator's benchmark accuracy (rank corr with the truth) and its learning speed (AUC)"""
    sft_dir: str | None = None
    """keep the warm start here: loaded when the folder holds one, else made and saved there (so
    runs split over processes or sessions share one checkpoint)"""
    hidden: int | None = None
    """tiny model width (None: the quickstart's, as for the warm-start knobs below)"""
    layers: int | None = None
    expert_episodes: int | None = None
    sft_epochs: int | None = None
    sft_batch_episodes: int | None = None
    induction_steps: int | None = None
    induction_digits: float | None = None
    """share of the induction warm-up's rows made of digits (copying numbers: Tools' arithmetic)"""
    epsilon: float | None = None
    """action noise of the warm start's scripted expert"""
    threads: int | None = None
    """torch threads (None: the quickstart's 2; 1 lets two comparisons share 2 cores)"""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__, registry=CONFIG_FLAGS)
    if args.merge:
        return finish(merge_studies([json.loads(Path(f).read_text()) for f in args.merge.split(",")], args.threshold), args)
    overrides = {"hidden_size": args.hidden, "num_layers": args.layers, "expert_episodes": args.expert_episodes,
                 "sft_epochs": args.sft_epochs, "induction_steps": args.induction_steps, "threads": args.threads,
                 "induction_digit_fraction": args.induction_digits, "epsilon": args.epsilon,
                 "sft_batch_episodes": args.sft_batch_episodes}  # fmt: skip
    rl, warm_kw = args.train, None
    qs = replace(QuickstartConfig(progress=rl.progress, max_new_tokens=rl.max_new_tokens),  # evaluation's replies as RL's
                 **{k: v for k, v in overrides.items() if v is not None})  # fmt: skip
    ev: dict[str, Any] = {**qs.eval_kwargs(), "n_eval": args.n_eval}
    if args.env is not None:
        quickstart_kw = QuickstartConfig().train_env_kwargs()
        kw = {} if rl.env_kwargs == quickstart_kw else {k: v for k, v in rl.env_kwargs.items() if k != "split"}
        qs, warm_kw, ev["env_kwargs"] = replace(qs, env_id=args.env), {**kw, "split": "train"}, kw
        rl = replace(rl, env_kwargs=warm_kw)
    env_id = qs.env_id
    torch.set_num_threads(qs.threads)
    t0 = time.perf_counter()
    results: dict[str, dict[int, list[float]]] = {}
    final: dict[str, dict[int, dict[str, float]]] = {}  # the last evaluation's metrics (turns, invalid actions, tool calls)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.sft_dir) if args.sft_dir else Path(tmp) / "sft"
        if (ckpt / "config.json").exists():
            policy = HFPolicy.from_pretrained(ckpt, seed=qs.seed)
        else:
            policy, _ = warm_start(qs, tmp, env_kwargs=warm_kw)
            policy.save(ckpt)
        start = getattr(evaluate(policy, env_id, **ev), args.metric)
        print(f"warm start: {args.metric} {start:.3f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        for name in args.estimators.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                policy = HFPolicy.from_pretrained(ckpt, seed=seed)
                curve = [start]
                with GRPOTrainer(policy, env_id, replace(rl, estimator=name, seed=seed)) as tr:
                    while tr.step_idx < tr.total_steps:
                        tr.step()
                        if tr.step_idx % args.eval_every == 0 or tr.step_idx == tr.total_steps:
                            result = evaluate(policy, env_id, **ev)
                            curve.append(getattr(result, args.metric))
                            print(f"{name} seed {seed}: step {tr.step_idx}/{tr.total_steps}, {args.metric} "
                                  f"{curve[-1]:.3f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
                results.setdefault(name, {})[seed] = curve
                health = {k: v for k, v in episode_metrics(result.episodes).items() if k in ("turns", "invalid_frac")}
                final.setdefault(name, {})[seed] = {"success": result.success, "reward": result.reward, **health, **result.metrics}
    per_round = rl.num_groups * rl.group_size
    samples = [0] + [s * per_round for s in sorted({*range(args.eval_every, rl.steps + 1, args.eval_every), rl.steps})]
    out = {"env_id": env_id, "env_kwargs": ev["env_kwargs"], "metric": args.metric, "start": start,
           "budget_episodes": rl.steps * per_round, **summarize(results, samples, args.threshold, final)}  # fmt: skip
    return finish(out, args)


def finish(out: dict[str, Any], args: Args) -> dict[str, Any]:
    """Add `--accuracy`'s correlation of accuracy with learning speed; write `--json`."""
    if args.accuracy:
        out["accuracy_vs_learning"] = accuracy_vs_learning(out["table"], json.loads(Path(args.accuracy).read_text()))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    out = main()
    print(f"{out['env_id']}: threshold {out['threshold']:.3f}")
    for name, row in out["table"].items():
        curve = "  ".join(f"{r['samples']:>5}: {r['mean']:.3f}±{r['sd']:.3f}" for r in row["curve"])
        print(name.ljust(12), curve, f"  AUC {row['auc_mean']:.3f}  to-threshold {row['episodes_to_threshold']}")
