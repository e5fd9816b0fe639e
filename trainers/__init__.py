"""Trainers: losses, GRPO-family / PPO / SFT trainers, task samplers, the quickstart.

The trainer classes are imported lazily, so `import creditgym.trainers` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "GRPOTrainer": "creditgym.trainers.grpo",
    "GRPOConfig": "creditgym.trainers.grpo",
    "PPOTrainer": "creditgym.trainers.ppo",
    "PPOConfig": "creditgym.trainers.ppo",
    "SFTTrainer": "creditgym.trainers.sft",
    "SFTConfig": "creditgym.trainers.sft",
    "TaskSampler": "creditgym.trainers.curriculum",
    "UniformSampler": "creditgym.trainers.curriculum",
    "evaluate": "creditgym.trainers.evaluate",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'creditgym.trainers' has no attribute {name!r}")
