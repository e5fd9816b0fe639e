"""Learning-rate schedules: hand-computed factors, properties, errors, and the trainers' final lr."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from creditgym.trainers.schedule import build_optimizer, lr_factor


def test_lr_factor_hand_computed() -> None:
    # warm-up 2 of 10 steps: (s+1)/2 for s < 2, then decay over the remaining 8 steps
    assert [lr_factor(s, 2, 10, "constant") for s in (0, 1, 5, 10)] == [0.5, 1.0, 1.0, 1.0]
    assert [lr_factor(s, 2, 10, "linear") for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    assert lr_factor(6, 2, 10, "cosine") == pytest.approx(0.5)  # halfway: (1 + cos(pi/2)) / 2
    assert lr_factor(4, 2, 10, "cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert lr_factor(10, 2, 10, "cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(6, 2, 10, "linear", min_ratio=0.2) == pytest.approx(0.6)
    assert lr_factor(50, 0, 10, "linear") == 0.0  # past the plan it stays at the floor


@given(
    warm=st.integers(0, 20), total=st.integers(1, 200), ratio=st.floats(0.0, 1.0),
    schedule=st.sampled_from(["linear", "cosine"]),
)  # fmt: skip
def test_lr_factor_decays_monotonically_within_bounds(warm: int, total: int, ratio: float, schedule: str) -> None:
    after = [lr_factor(s, warm, total, schedule, ratio) for s in range(warm, total + 5)]
    assert all(ratio - 1e-12 <= f <= 1.0 + 1e-12 for f in after)
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(after))
    if total > warm:
        assert after[0] == pytest.approx(1.0)
        assert lr_factor(total, warm, total, schedule, ratio) == pytest.approx(ratio)


def test_build_optimizer_errors_say_what_to_do() -> None:
    m = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="constant"):
        build_optimizer(m, 1e-3, 0.0, 0, schedule="step")
    with pytest.raises(ValueError, match="total_steps"):
        build_optimizer(m, 1e-3, 0.0, 0, schedule="cosine")


def test_scheduler_follows_lr_factor() -> None:
    m = torch.nn.Linear(2, 2)
    opt, sched = build_optimizer(m, 0.1, 0.0, 1, schedule="linear", total_steps=5)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.1 * lr_factor(s, 1, 5, "linear") for s in range(5)])


def test_sft_cosine_schedule_ends_at_the_floor(tiny_policy) -> None:
    from _trainer_helpers import expert_episodes

    from creditgym.trainers.sft import SFTConfig, SFTTrainer

    eps = expert_episodes(tiny_policy.tokenizer, n=4)
    cfg = SFTConfig(lr=1e-3, epochs=2, batch_episodes=2, lr_schedule="cosine", min_lr_ratio=0.25, tensorboard=False)
    tr = SFTTrainer(tiny_policy, cfg, episodes=eps)
    tr.train()
    assert tr.learners["agent"].optimizer.param_groups[0]["lr"] == pytest.approx(0.25e-3)

