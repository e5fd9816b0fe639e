"""Non-finite rewards drop only their groups, never the whole batch; non-finite configs are refused
(issue 17; METHODS.md 1.9)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import pytest
from _trainer_helpers import LetterEnv

from creditgym import Episode, TaskSpec, Turn
from creditgym.envs import Outcome, Parsed

NAN_ENV_ID = "TrainerTestNaNLetter-v0"


class NaNLetterEnv(LetterEnv):
    """LetterEnv whose rewards are NaN when built with `nan_reward=True`."""

    def __init__(self, nan_reward: bool = False, **kw: Any):
        super().__init__(**kw)
        self.nan_reward = nan_reward

    def _apply(self, parsed: Parsed) -> Outcome:
        out = super()._apply(parsed)
        return dataclasses.replace(out, reward=math.nan) if self.nan_reward else out


class HalfNaNSampler:
    """Every other group plays the NaN variant; records what `update` sees."""

    def __init__(self) -> None:
        self.seen: list[tuple[list[TaskSpec], list[Episode]]] = []

    def sample(self, n: int, rng: Any) -> list[TaskSpec]:
        return [TaskSpec("nan" if g % 2 else "ok", {"nan_reward": bool(g % 2)}) for g in range(n)]

    def update(self, specs: Sequence[TaskSpec], episodes: Sequence[Episode], advantages: Sequence[Any]) -> None:
        self.seen.append((list(specs), list(episodes)))


@pytest.fixture(scope="module", autouse=True)
def nan_env() -> None:
    import gymnasium

    if NAN_ENV_ID not in gymnasium.registry:
        gymnasium.register(NAN_ENV_ID, entry_point=NaNLetterEnv)


@pytest.mark.parametrize("estimator", ["grpo", "reinforce++"])
def test_half_nan_tasks_drop_their_groups_and_every_step_updates(tiny_policy, estimator: str) -> None:
    from _trainer_helpers import params_vector

    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    sampler = HalfNaNSampler()
    cfg = GRPOConfig(estimator=estimator, steps=6, num_groups=4, group_size=2, max_new_tokens=6, lr=1e-2,
                     tensorboard=False)  # fmt: skip
    tr = GRPOTrainer(tiny_policy, NAN_ENV_ID, cfg, task_sampler=sampler)
    before = params_vector(tiny_policy.model).clone()
    tr.train()
    assert tr.skipped_steps == 0  # 6 of 6 steps update (reinforce++ whitens over the batch: NaN spread before)
    for m in tr.history:
        assert m["dropped_groups"] == 2.0 and m["dropped_groups_nonfinite"] == 2.0
        assert m["dropped_groups_generation_error"] == 0.0
        assert m["episodes"] == 4.0 and math.isfinite(m["reward"]) and "skipped" not in m
    assert not bool((params_vector(tiny_policy.model) == before).all())
    # the sampler sees a dropped group as a zero-advantage group: all-equal finite returns
    specs, eps = sampler.seen[-1]
    assert len(eps) == 8
    dropped = [e for e in eps if e.meta.get("train_excluded") == "nonfinite_reward"]
    assert len(dropped) == 4 and all(e.total_reward == 0.0 for e in dropped)


def _episode(group: str, reward: float, **meta: Any) -> Episode:
    turn = Turn(obs_ids=(1,), action_ids=(2,), reward=reward)
    return Episode(turns=(turn,), group_id=group, task_id=group, outcome={"success": 0.0}, meta=meta)


def test_split_for_training_drops_whole_groups_by_reason() -> None:
    from creditgym.trajectory import split_for_training

    eps = [
        _episode("a", 1.0), _episode("a", 0.0),
        _episode("b", 1.0), _episode("b", math.inf),                       # our own check
        _episode("c", 1.0, train_excluded="generation_error"), _episode("c", 0.0),  # the Collector's flag
        _episode("d", 0.5, mc_rollout=True), _episode("d", 0.0),
    ]  # fmt: skip
    trained, rollouts, m = split_for_training(eps)
    assert [e.group_id for e in trained] == ["a", "a", "d"]
    assert [e.group_id for e in rollouts] == ["d"]
    assert m == {"dropped_groups": 2.0, "dropped_groups_nonfinite": 1.0, "dropped_groups_generation_error": 1.0}


def test_nonfinite_outcome_also_drops_the_group() -> None:
    from creditgym.trajectory import nonfinite_reward

    ep = _episode("a", 1.0)
    assert not nonfinite_reward(ep)
    assert nonfinite_reward(dataclasses.replace(ep, outcome={"success": math.nan}))
    assert nonfinite_reward(dataclasses.replace(ep, meta={"greedy_return": -math.inf}))


@pytest.mark.parametrize(
    ("cls_path", "kw", "named"),
    [
        ("creditgym.trainers.grpo:GRPOConfig", {"lr": math.nan}, "lr=nan"),
        ("creditgym.trainers.grpo:GRPOConfig", {"estimator_cfg": {"gamma": math.inf}}, "estimator_cfg['gamma']=inf"),
        ("creditgym.trainers.grpo:GRPOConfig", {"adam_betas": (0.9, math.nan)}, "adam_betas[1]=nan"),
        ("creditgym.trainers.ppo:PPOConfig", {"vf_coef": -math.inf}, "vf_coef=-inf"),
        ("creditgym.trainers.sft:SFTConfig", {"min_return": math.nan}, "min_return=nan"),
        ("creditgym.trainers.quickstart:QuickstartConfig", {"epsilon": math.nan}, "epsilon=nan"),
        ("creditgym.trainers.quickstart:QuickstartConfig", {"invalid_penalty": math.nan}, "invalid_penalty=nan"),
    ],
)
def test_nonfinite_config_values_are_refused_by_name(cls_path: str, kw: dict[str, Any], named: str) -> None:
    import importlib

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    with pytest.raises(ValueError, match="non-finite") as e:
        cls(**kw)
    assert named in str(e.value)
    cls()  # the defaults are finite
