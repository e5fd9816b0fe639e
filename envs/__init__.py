"""Text environments: the TextEnv base, shared types, parsing helpers and one subpackage per family
(each registering its env ids, scripted expert, random baseline and difficulty presets)."""

from creditgym.envs.base import (
    SPLITS,
    BackendError,
    Invalid,
    Outcome,
    Parsed,
    Replayed,
    Task,
    TextEnv,
    sanitize_action,
    split_of_key,
    task_seed,
)
from creditgym.registry import difficulty_presets

__all__ = [
    "SPLITS",
    "BackendError",
    "Invalid",
    "Outcome",
    "Parsed",
    "Replayed",
    "Task",
    "TextEnv",
    "difficulty_presets",
    "sanitize_action",
    "split_of_key",
    "task_seed",
]
