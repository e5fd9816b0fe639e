"""Task samplers: what the trainer asks the Collector to play, one `TaskSpec` per group.

A sampler is any object with `sample(n, rng) -> list[TaskSpec]` and `update(specs, episodes)`
(curriculum samplers such as SEC learn from the groups they chose, with a later issue; a sampler
that learns nothing writes an `update` that does nothing). Samplers draw only from the generator they are given, so a resumed run
that restores the trainer's generator draws the same tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from creditgym.trajectory import Episode, TaskSpec

__all__ = ["TaskSampler", "UniformSampler"]


@runtime_checkable
class TaskSampler(Protocol):
    """Chooses the task category (and env kwargs) of each group."""

    def sample(self, n: int, rng: np.random.Generator) -> list[TaskSpec]: ...

    def update(self, specs: Sequence[TaskSpec], episodes: Sequence[Episode]) -> None:
        """What the trainer played for `specs` (a dropped group's episodes seen with zero rewards)."""
        ...


@dataclass
class UniformSampler:
    """Uniform over `categories`; each category maps to the env kwargs it sets (e.g. a difficulty).

    With no categories every group gets `TaskSpec("default", {})`: the env's own task distribution.
    """

    categories: dict[str, dict[str, Any]] = field(default_factory=dict)

    def sample(self, n: int, rng: np.random.Generator) -> list[TaskSpec]:
        if n < 0:
            raise ValueError(f"cannot sample {n} tasks; n must be >= 0")
        if not self.categories:
            return [TaskSpec("default", {}) for _ in range(n)]
        names = sorted(self.categories)
        picks = rng.integers(0, len(names), size=n)
        return [TaskSpec(names[i], dict(self.categories[names[i]])) for i in picks]

    def update(self, specs: Sequence[TaskSpec], episodes: Sequence[Episode]) -> None:
        """Uniform sampling learns nothing."""
        return None
