"""Train on your own env end to end: the GuessNumber env of examples/custom_env.py.

    python examples/custom_env_train.py --steps 20

SFT warm start on its scripted bisection expert (with epsilon-random guesses), then GRPO with the
turn-level `turn_return` estimator; held-out success before and after.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch

from creditgym.agents import tiny
from creditgym.agents.offline import expert_episodes
from creditgym.trainers import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer
from creditgym.trainers.evaluate import evaluate


def load_custom_env() -> str:
    """Import examples/custom_env.py (it registers the env and its scripted expert) once."""
    spec = importlib.util.spec_from_file_location("custom_env", Path(__file__).with_name("custom_env.py"))
    import sys

    if "custom_env" not in sys.modules:
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["custom_env"] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules["custom_env"].ENV_ID


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--expert-episodes", type=int, default=128)
    ap.add_argument("--sft-epochs", type=int, default=3)
    ap.add_argument("--n-eval", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    env_id = load_custom_env()
    env_kwargs = {"high": 32}

    cfg = tiny.TinyConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_layers=args.layers)
    policy = tiny.build(seed=args.seed, config=cfg)
    demos = expert_episodes(env_id, args.expert_episodes, seed=args.seed, tokenizer=policy.tokenizer, epsilon=0.3,
                            env_kwargs=env_kwargs)  # fmt: skip
    SFTTrainer(policy, SFTConfig(lr=1e-2, epochs=args.sft_epochs, warmup_steps=5), episodes=demos).train()
    kw = dict(n_eval=args.n_eval, env_kwargs=env_kwargs, max_new_tokens=16)
    before = evaluate(policy, env_id, **kw)
    rl = GRPOConfig(estimator="turn_return", steps=args.steps, num_groups=args.groups, group_size=args.group_size,
                    lr=5e-4, max_new_tokens=16, env_kwargs=env_kwargs, seed=args.seed)  # fmt: skip
    summary = GRPOTrainer(policy, env_id, rl).train()
    after = evaluate(policy, env_id, **kw)
    return {"before": before.success, "after": after.success, "train": summary}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
