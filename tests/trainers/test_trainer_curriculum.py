"""UniformSampler: deterministic under a seeded generator, uniform over categories."""

from __future__ import annotations

import numpy as np
import pytest

from creditgym import TaskSpec
from creditgym.trainers.curriculum import TaskSampler, UniformSampler


def test_default_sampler_gives_default_specs() -> None:
    specs = UniformSampler().sample(3, np.random.default_rng(0))
    assert specs == [TaskSpec("default", {})] * 3
    assert isinstance(UniformSampler(), TaskSampler)


def test_uniform_sampler_is_seeded_and_covers_categories() -> None:
    s = UniformSampler({"easy": {"difficulty": "easy"}, "hard": {"difficulty": "hard"}})
    a = s.sample(400, np.random.default_rng(1))
    b = s.sample(400, np.random.default_rng(1))
    assert a == b
    n_easy = sum(t.category == "easy" for t in a)
    assert 150 < n_easy < 250
    assert all(t.env_kwargs == {"difficulty": t.category} for t in a)
    with pytest.raises(ValueError):
        s.sample(-1, np.random.default_rng(0))
