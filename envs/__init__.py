"""Text environments: the TextEnv base, shared types, parsing helpers and one subpackage per family."""

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

__all__ = [
    "SPLITS",
    "BackendError",
    "Invalid",
    "Outcome",
    "Parsed",
    "Replayed",
    "Task",
    "TextEnv",
    "sanitize_action",
    "split_of_key",
    "task_seed",
]
