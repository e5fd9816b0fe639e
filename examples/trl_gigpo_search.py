"""GiGPO's per-turn credit inside TRL's GRPOTrainer, on creditgym's SearchEasy (docs/scale.md).

    pip install 'creditgym[trl]'
    python examples/trl_gigpo_search.py --max-steps 2                        # CPU, tiny model, HF generate
    accelerate launch --num_processes 8 examples/trl_gigpo_search.py \\
        --model smollm2-135m-instruct --use-vllm --vllm-mode colocate --bf16    # one node, 8 GPUs
    accelerate launch --config_file zero3.yaml examples/trl_gigpo_search.py  # DeepSpeed ZeRO-3 / FSDP: accelerate's

Each dataset row is one SearchEasy task; TRL repeats it `num_generations` times (one GRPO group), the
Collector plays each copy multi-turn through TRL's generation backend, and the loss optimises
creditgym's gigpo advantages, one per completion token, instead of TRL's one per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import tyro
from trl import GRPOConfig

from creditgym.agents import pretrained, tiny
from creditgym.envs.search import SEARCH_EASY
from creditgym.integrations.trl import CreditGRPOTrainer, task_dataset


@dataclass
class Args:
    model: str = "tiny"
    """"tiny" (creditgym.agents.tiny, from scratch, CPU) or a `pretrained.load` name or directory."""
    env_id: str = SEARCH_EASY
    estimator: str = "gigpo"
    """any creditgym estimator TRL can run (no critic, no probes; docs/scale.md)."""
    gamma: float = 0.95
    """gigpo's discount over turns."""
    tasks: int = 256
    """dataset rows: the tasks of seeds 0..tasks-1."""
    output_dir: str = "runs/trl_gigpo_search"
    max_steps: int = 100
    per_device_train_batch_size: int = 8
    num_generations: int = 8
    """episodes per task (the GRPO group)."""
    max_completion_length: int = 64
    """tokens per action (each turn is one generation call)."""
    learning_rate: float = 1e-5
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    """"colocate" (vLLM inside each training process) or "server" (`trl vllm-serve`)."""
    bf16: bool = False
    seed: int = 0


def main(args: Args) -> dict[str, float]:
    policy = tiny.build(seed=args.seed) if args.model == "tiny" else pretrained.load(args.model)
    config = GRPOConfig(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.per_device_train_batch_size,
        num_generations=args.num_generations, max_completion_length=args.max_completion_length,
        learning_rate=args.learning_rate, use_vllm=args.use_vllm, vllm_mode=args.vllm_mode, bf16=args.bf16,
        seed=args.seed, report_to="none", save_strategy="no", logging_steps=1,
    )
    trainer = CreditGRPOTrainer(
        policy.model, args.env_id, config, estimator=args.estimator, estimator_cfg={"gamma": args.gamma},
        processing_class=policy.tokenizer, train_dataset=task_dataset(args.env_id, range(args.tasks)),
    )
    return trainer.train().metrics


if __name__ == "__main__":
    main(tyro.cli(Args))
