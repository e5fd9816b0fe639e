"""Train a model through the gateway: an outside agent that knows only the `openai` client plays,
the gateway records its exact tokens, GRPO learns from them, and the server gets the new weights.

    python examples/train_through_gateway.py --steps 5 --group-size 4

The pieces, each of which can run on its own machine (docs/scale.md, "Gateway"):

    creditgym serve MODEL_DIR --port 8000                 # the generation server (vLLM in production)
    creditgym gateway --upstream http://127.0.0.1:8000/v1 --out runs/gw
    OPENAI_BASE_URL=http://127.0.0.1:8100/s/<session>/v1 python examples/gateway_agent.py

Here all three run in this process (the agent as a subprocess per session) on a tiny from-scratch model.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from creditgym.agents import OpenAIPolicy, tiny
from creditgym.agents.hf import HFPolicy
from creditgym.envs.search import SEARCH_EASY
from creditgym.integrations.gateway import Gateway, run_groups
from creditgym.integrations.serve import start_server
from creditgym.trainers import GRPOConfig, GRPOTrainer

AGENT = [sys.executable, str(Path(__file__).with_name("gateway_agent.py"))]
TASKS = [
    {
        "task_id": "fr",
        "question": "What is the capital of France?",
        "answer": "paris",
        "docs": {"france": "Paris."},
    },
    {
        "task_id": "no",
        "question": "What is the capital of Norway?",
        "answer": "oslo",
        "docs": {"norway": "Oslo."},
    },
    {
        "task_id": "jp",
        "question": "What is the capital of Japan?",
        "answer": "tokyo",
        "docs": {"japan": "Tokyo."},
    },
]


@dataclass
class Args:
    steps: int = 5
    group_size: int = 4
    """agent runs per task (one GRPO group)"""
    max_tokens: int = 24
    """completion length the agent asks for"""
    lr: float = 1e-3
    hidden: int = 64
    """tiny model width"""
    layers: int = 1
    out_dir: str | None = None
    """keeps the model the server loads and the gateway's episodes.jsonl (default: a temporary folder)"""
    threads: int = 2
    """torch intra-op threads (two runs sharing 2 cores: 1 each, or OpenMP oversubscribes them)"""


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    args = tyro.cli(Args, args=argv, description=__doc__)
    torch.set_num_threads(args.threads)
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="creditgym-gateway-"))
    config = tiny.TinyConfig(hidden_size=args.hidden, num_layers=args.layers)
    policy = tiny.build(seed=0, config=config, env_ids=[SEARCH_EASY])  # the learner
    served = HFPolicy.from_pretrained(policy.save(out / "model"), seed=0)  # the server's copy

    with start_server(served, model_name="tiny") as server, Gateway(server.url, out_dir=out) as gateway:
        # the trainer's generator is the server: after each update, sync_from reloads the weights there
        generator = OpenAIPolicy(
            server.url, "tiny", api="completions", tokenizer=policy.tokenizer, server="vllm"
        )
        rl = GRPOConfig(lr=args.lr, max_new_tokens=args.max_tokens, tensorboard=False)
        trainer = GRPOTrainer(policy, SEARCH_EASY, rl, generator=generator)
        history = []
        for step in range(args.steps):
            episodes = run_groups(
                AGENT, TASKS, args.group_size, gateway, env={"AGENT_MAX_TOKENS": str(args.max_tokens)}
            )
            metrics = trainer.train_on(episodes)
            history.append(metrics)
            print(
                f"step {step}: reward {metrics['reward']:.3f}  turns {metrics['turns']:.2f}  "
                f"pg_loss {metrics['pg_loss']:+.4f}  server/trainer logprob gap {metrics['mismatch/max_abs']:.1e}"
            )
    print(f"episodes in {out / 'episodes.jsonl'}")
    return history


if __name__ == "__main__":
    main()
