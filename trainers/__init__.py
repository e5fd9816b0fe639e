"""Trainers: GRPO-family (grpo.py), PPO (ppo.py), SFT (sft.py), DigiRL (digirl.py), Digi-Q (digiq.py), each with its Config beside it; the
losses, the policy update, task samplers, evaluation and the quickstart."""

from __future__ import annotations

from creditgym.trainers.curriculum import TaskSampler, UniformSampler
from creditgym.trainers.digiq import DigiQConfig, DigiQTrainer
from creditgym.trainers.digirl import DigiRLConfig, DigiRLTrainer
from creditgym.trainers.evaluate import evaluate
from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer
from creditgym.trainers.ppo import PPOConfig, PPOTrainer
from creditgym.trainers.sft import SFTConfig, SFTTrainer

__all__ = [
    "DigiQConfig",
    "DigiQTrainer",
    "DigiRLConfig",
    "DigiRLTrainer",
    "GRPOConfig",
    "GRPOTrainer",
    "PPOConfig",
    "PPOTrainer",
    "SFTConfig",
    "SFTTrainer",
    "TaskSampler",
    "UniformSampler",
    "evaluate",
]
