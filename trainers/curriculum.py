"""Task samplers: what the trainer asks the Collector to play, one `TaskSpec` per group.

A sampler is any object with `sample(n, rng) -> list[TaskSpec]` and `update(specs, episodes,
advantages)`, which the trainer calls after credit with every episode a round's `specs` produced
(its `meta["category"]` names the spec's category) and, per episode, the advantages of its turns
(zeros for a group that was not trained: dropped by dynamic sampling or for non-finite rewards). A
sampler that learns nothing writes an `update` that does nothing. Samplers draw only from the
generator they are given, so a resumed run that restores the trainer's generator draws the same
tasks; a sampler with state of its own (SEC's Q values) exposes `state_dict()` / `load_state_dict()`
and the trainer checkpoints it.

`SECSampler` is SEC ("Self-Evolving Curriculum for LLM Reasoning", arXiv 2505.14970; METHODS.md 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from creditgym.trajectory import Episode, TaskSpec

__all__ = ["CURRICULA", "SECSampler", "StatefulSampler", "TaskSampler", "UniformSampler", "category_signal", "sec_update", "softmax_probs"]


@runtime_checkable
class TaskSampler(Protocol):
    """Chooses the task category (and env kwargs) of each group."""

    def sample(self, n: int, rng: np.random.Generator) -> list[TaskSpec]: ...

    def update(self, specs: Sequence[TaskSpec], episodes: Sequence[Episode], advantages: Sequence[torch.Tensor]) -> None:
        """What the trainer played for `specs`: the episodes and, aligned with them, each one's
        per-turn advantages (a dropped group's episodes seen with zero rewards and zero advantages)."""
        ...


@runtime_checkable
class StatefulSampler(Protocol):
    """A TaskSampler whose learnt state goes into the trainer's checkpoints (SECSampler's Q values).
    Samplers without one (uniform, most user samplers) resume from scratch."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


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

    def update(self, specs: Sequence[TaskSpec], episodes: Sequence[Episode], advantages: Sequence[torch.Tensor]) -> None:
        """Uniform sampling learns nothing."""
        return None


# ---------------------------------------------------------------------- SEC


def category_signal(episodes: Sequence[Episode], advantages: Sequence[torch.Tensor]) -> dict[str, float]:
    """SEC's per-arm reward: for each category, the mean over its episodes of the mean |advantage| over
    the episode's valid turns (an episode without turns counts 0)."""
    if len(episodes) != len(advantages):
        raise ValueError(f"{len(advantages)} advantage rows for {len(episodes)} episodes; give one per episode")
    per_cat: dict[str, list[float]] = {}
    for ep, adv_K in zip(episodes, advantages):
        cat = ep.meta.get("category")
        if cat is None:
            raise ValueError(f"episode {ep.episode_id} has no meta['category']; collect it with tasks=[TaskSpec(...)]")
        a_K = torch.as_tensor(adv_K, dtype=torch.float64)
        per_cat.setdefault(str(cat), []).append(float(a_K.abs().mean()) if a_K.numel() else 0.0)
    return {c: sum(v) / len(v) for c, v in per_cat.items()}


def sec_update(q: dict[str, float], signal: dict[str, float], alpha: float) -> dict[str, float]:
    """TD(0) towards this step's signal, only for the arms drawn: Q_c <- alpha*r_c + (1-alpha)*Q_c."""
    return {c: (alpha * signal[c] + (1 - alpha) * v) if c in signal else v for c, v in q.items()}


def softmax_probs(q: dict[str, float], tau: float) -> dict[str, float]:
    """Boltzmann probabilities softmax(Q / tau) (shifted by the max for stability)."""
    top = max(q.values())
    w = {c: math.exp((v - top) / tau) for c, v in q.items()}
    z = sum(w.values())
    return {c: x / z for c, x in w.items()}


@dataclass
class SECSampler:
    """Self-Evolving Curriculum (arXiv 2505.14970, METHODS.md 4): categories are arms of a
    non-stationary bandit. Each group draws a category from softmax(Q / tau) (then the env draws a
    task inside it); after credit, each drawn arm's Q moves towards the mean absolute advantage of its
    episodes, so categories that still give a learning signal (neither all solved nor all failed) are
    played more. Q starts at 0; `state_dict()` (Q) is checkpointed by the trainer."""

    categories: dict[str, dict[str, Any]]
    """Category name -> env kwargs it sets, e.g. `{"hops=1": {"hops": [1, 1]}, "hops=2": {"hops": [2, 2]}}`."""
    alpha: float = 0.5
    """TD(0) step size (the paper's official runs: 0.5)."""
    tau: float = 1.0
    """Boltzmann temperature (1.0 Countdown, 0.4 math, 0.2 the 2-D curriculum)."""
    q: dict[str, float] = field(default_factory=dict)
    """Current arm values (filled with 0 for every category)."""

    def __post_init__(self) -> None:
        if not self.categories:
            raise ValueError("SECSampler needs at least one category, e.g. {'easy': {'difficulty': 1}}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"SEC alpha must be in (0, 1], got {self.alpha}")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"SEC tau must be > 0, got {self.tau}")
        self.q = {c: float(self.q.get(c, 0.0)) for c in sorted(self.categories)}

    def probs(self) -> dict[str, float]:
        """The current sampling distribution over categories."""
        return softmax_probs(self.q, self.tau)

    def sample(self, n: int, rng: np.random.Generator) -> list[TaskSpec]:
        if n < 0:
            raise ValueError(f"cannot sample {n} tasks; n must be >= 0")
        p = self.probs()
        names = sorted(p)
        picks = rng.choice(len(names), size=n, p=np.array([p[c] for c in names]))
        return [TaskSpec(names[i], dict(self.categories[names[i]])) for i in picks]

    def update(self, specs: Sequence[TaskSpec], episodes: Sequence[Episode], advantages: Sequence[torch.Tensor]) -> None:
        signal = {c: r for c, r in category_signal(episodes, advantages).items() if c in self.q}
        self.q = sec_update(self.q, signal, self.alpha)

    def state_dict(self) -> dict[str, Any]:
        return {"q": dict(self.q)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q = {c: float(v) for c, v in state["q"].items()}


CURRICULA: dict[str, type] = {"uniform": UniformSampler, "sec": SECSampler}
"""Task samplers by name (`RLConfig.curriculum`), built as `cls(categories, **curriculum_cfg)`."""
