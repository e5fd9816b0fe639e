"""The reward-transform hook (trainers/rewards.py): registry, no mutation, metrics, order in the
step (before dynamic sampling), and exact resume of a transform's state."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from _trainer_helpers import build_tiny, params_vector, register_letter_env

from creditgym import Episode, Turn
from creditgym.trainers.rewards import (
    REWARD_TRANSFORMS,
    RewardTransform,
    apply_reward_transforms,
    build_reward_transforms,
    with_turn_reward,
)


@pytest.fixture(scope="module", autouse=True)
def letter_env() -> None:
    register_letter_env()


def _ep(group: str, rewards: tuple[float, ...], **outcome: float) -> Episode:
    turns = tuple(Turn(obs_ids=(1,), action_ids=(2,), reward=r) for r in rewards)
    return Episode(turns=turns, group_id=group, outcome=dict(outcome))


@dataclasses.dataclass
class RunningBaseline:
    """Stateful test transform: subtracts the running mean of the env returns seen in earlier rounds."""

    def __call__(self, episodes: list[Episode], state: dict[str, Any]) -> tuple[list[Episode], dict[str, Any]]:
        n, mean = int(state.get("n", 0)), float(state.get("mean", 0.0))
        out = [with_turn_reward(e, len(e.turns) - 1, e.turns[-1].reward - mean) for e in episodes]
        for e in episodes:
            n += 1
            mean += (e.total_reward - mean) / n
        return out, {"n": n, "mean": mean, "metrics": {"baseline": mean}}


def test_with_turn_reward_copies_and_keeps_the_env_reward() -> None:
    ep = _ep("g", (0.5, 1.0), answer=1.0, **{"return": 1.5})
    new = with_turn_reward(ep, 1, 0.25, {"answer": 0.25})
    again = with_turn_reward(new, 1, 0.0)
    assert ep.turns[1].reward == 1.0 and "env_reward" not in ep.turns[1].info and ep.outcome["answer"] == 1.0
    assert new.turns[1].reward == 0.25 and new.outcome == {"answer": 0.25, "return": 0.75}
    assert again.turns[1].info["env_reward"] == 1.0 and again.meta["env_return"] == 1.5  # the env's, kept once
    assert again.turns[0] == ep.turns[0]


def test_registry_builds_by_name_and_rejects_unknown_names() -> None:
    assert {"ttrl", "otc_grpo"} <= set(REWARD_TRANSFORMS)
    built = build_reward_transforms(["otc_grpo", "ttrl"], {"otc_grpo": {"c": 2.0}})
    assert [n for n, _ in built] == ["otc_grpo", "ttrl"] and built[0][1].c == 2.0  # type: ignore[attr-defined]
    assert all(isinstance(t, RewardTransform) for _, t in built)
    with pytest.raises(KeyError, match="registered"):
        build_reward_transforms(["nope"])
    with pytest.raises(ValueError, match="reward_transforms does not list"):
        build_reward_transforms(["ttrl"], {"otc_grpo": {"c": 1.0}})


def test_apply_chains_transforms_and_moves_metrics_out_of_the_state() -> None:
    eps = [_ep("g", (1.0,)), _ep("g", (3.0,))]
    pair = [("a", RunningBaseline()), ("b", RunningBaseline())]
    out, states, metrics = apply_reward_transforms(pair, eps, [{}, {"n": 1, "mean": 1.0}])
    # a: first round, baseline 0 -> rewards unchanged; b: subtracts its mean 1.0
    assert [e.total_reward for e in out] == [0.0, 2.0]
    assert states == [{"n": 2, "mean": 2.0}, {"n": 3, "mean": pytest.approx(5 / 3)}]  # b saw 1 and 3 after 1
    assert metrics == {"reward/a/baseline": 2.0, "reward/b/baseline": pytest.approx(5 / 3)}
    assert [e.total_reward for e in eps] == [1.0, 3.0]  # the input episodes are untouched
    with pytest.raises(ValueError, match="same list"):
        apply_reward_transforms(pair, eps, [{}])


def _trainer(cache: Path, out: Path, steps: int, **kw: Any) -> Any:
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig(steps=steps, num_groups=2, group_size=2, max_new_tokens=4, lr=1e-3, out_dir=str(out),
                     checkpoint_every=2, resume=True, tensorboard=False, seed=3, **kw)  # fmt: skip
    return GRPOTrainer(build_tiny(cache), "TrainerTestLetter-v0", cfg, reward_transforms=[RunningBaseline()])


def test_transform_state_resumes_exactly(tiny_cache: Path, tmp_path: Path) -> None:
    straight = _trainer(tiny_cache, tmp_path / "a", steps=4)
    straight.train()
    first = _trainer(tiny_cache, tmp_path / "b", steps=4)
    first.step()
    first.step()  # checkpoint after step 2; the process "dies" here
    second = _trainer(tiny_cache, tmp_path / "b", steps=4)
    assert second.step_idx == 2 and second.reward_states == first.reward_states and second.reward_states[0]["n"] == 8
    second.train()
    assert second.reward_states == straight.reward_states
    assert [m["reward/RunningBaseline/baseline"] for m in straight.history[2:]] == [
        m["reward/RunningBaseline/baseline"] for m in second.history
    ]
    assert [m["reward"] for m in straight.history[2:]] == [m["reward"] for m in second.history]
    assert torch.equal(params_vector(straight.model), params_vector(second.model))


def test_dynamic_sampling_reads_the_transformed_rewards(tiny_cache: Path) -> None:
    """A transform that makes every group's returns equal leaves dynamic sampling nothing to keep,
    whatever the env paid: the filter runs after the transforms."""
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    def flatten(episodes: list[Episode], state: dict[str, Any]) -> tuple[list[Episode], dict[str, Any]]:
        out = []
        for e in episodes:
            for k in range(len(e.turns)):
                e = with_turn_reward(e, k, 0.0)
            out.append(e)
        return out, {**state, "rounds": int(state.get("rounds", 0)) + 1}

    cfg = GRPOConfig(steps=1, num_groups=2, group_size=4, max_new_tokens=6, dynamic_sampling=True,
                     dynamic_sampling_max_batches=2, tensorboard=False)  # fmt: skip
    tr = GRPOTrainer(build_tiny(tiny_cache), "TrainerTestLetter-v0", cfg, reward_transforms=[flatten])
    with pytest.raises(RuntimeError, match="kept 0 of 2 groups after 2 rounds"):
        tr.train()
    assert tr.reward_states == [{"rounds": 2}]
