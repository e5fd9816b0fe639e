"""Compare credit estimators on one multi-turn env from one shared SFT checkpoint.

    python examples/compare_credit.py --estimators grpo,gigpo,turn_return,igpo --seeds 0,1,2 --steps 20

Every run starts from the same warm-started checkpoint and gets the same sample budget
(steps x groups x group size episodes); the table shows held-out success vs samples, mean and
spread over seeds. igpo needs gold-answer probes, which the trainer requests from its `needs`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from creditgym.agents import Collector, ScriptedPolicy, tiny
from creditgym.agents.hf import HFPolicy
from creditgym.trainers import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer
from creditgym.trainers.evaluate import evaluate


def warm_start(env: str, env_kwargs: dict, args: argparse.Namespace, where: Path) -> Path:
    cfg = tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_layers=args.layers)
    policy = tiny.build(seed=0, config=cfg)
    expert = ScriptedPolicy.for_env(env, tokenizer=policy.tokenizer, epsilon=0.3)
    demos = Collector(expert, env, env_kwargs=env_kwargs).collect(num_groups=args.expert_episodes, seed=0)
    SFTTrainer(policy, SFTConfig(lr=1e-2, epochs=args.sft_epochs, warmup_steps=5), episodes=demos).train()
    return policy.save(where / "sft")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="creditgym/SearchEasy-v0")
    ap.add_argument("--estimators", default="grpo,gigpo,turn_return,igpo")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--expert-episodes", type=int, default=256)
    ap.add_argument("--sft-epochs", type=int, default=4)
    ap.add_argument("--n-eval", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    env_kwargs = {"topk": 1}
    ev = dict(n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=48)
    results: dict[str, dict[int, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = warm_start(args.env, env_kwargs, args, Path(tmp))
        start = evaluate(HFPolicy.from_pretrained(ckpt), args.env, **ev).success
        for name in args.estimators.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                policy = HFPolicy.from_pretrained(ckpt, seed=seed)
                cfg = GRPOConfig(estimator=name, steps=args.steps, num_groups=args.groups, group_size=args.group_size,
                                 lr=5e-4, max_new_tokens=48, env_kwargs=env_kwargs, seed=seed)  # fmt: skip
                tr = GRPOTrainer(policy, args.env, cfg)
                curve = [start]
                while tr.step_idx < tr.total_steps:
                    tr.step()
                    if tr.step_idx % args.eval_every == 0 or tr.step_idx == tr.total_steps:
                        curve.append(evaluate(policy, args.env, **ev).success)
                results.setdefault(name, {})[seed] = curve
    per_round = args.groups * args.group_size
    samples = [0] + [min(s, args.steps) * per_round for s in range(args.eval_every, args.steps + args.eval_every, args.eval_every)]
    table = {}
    for name, by_seed in results.items():
        curves = list(by_seed.values())
        table[name] = [
            {"samples": samples[i], "mean": statistics.mean(c[i] for c in curves),
             "sd": statistics.pstdev([c[i] for c in curves])}
            for i in range(len(curves[0]))
        ]  # fmt: skip
    return {"start_success": start, "budget_episodes": args.steps * per_round, "table": table}


if __name__ == "__main__":
    out = main()
    for name, rows in out["table"].items():
        print(name.ljust(12), "  ".join(f"{r['samples']:>5}: {r['mean']:.3f}±{r['sd']:.3f}" for r in rows))
    print(json.dumps(out, indent=1))
