"""SEC, Self-Evolving Curriculum (arXiv 2505.14970, METHODS.md 4): the worked example, the reference
|A| values, the 3-arm shift, and the sampler inside the trainer (advantages after credit, resume)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _trainer_helpers import build_tiny
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym import Episode, TaskSpec, Turn
from creditgym.batch import CreditBatch
from creditgym.credit import compute
from creditgym.envs import Outcome, Parsed, Task, TextEnv
from creditgym.trainers.curriculum import (
    SECSampler,
    TaskSampler,
    UniformSampler,
    category_signal,
    sec_update,
    softmax_probs,
)
from creditgym.trainers.grpo import turn_advantages

ARMS_ENV_ID = "TrainerTestArms-v0"


def _eps(category: str, rewards: list[float], group: str) -> list[Episode]:
    return [Episode(turns=(Turn(obs_ids=(1,), action_ids=(2,), reward=r),), group_id=group, outcome={"success": r},
                    meta={"category": category}) for r in rewards]  # fmt: skip


def _grpo_adv(episodes: list[Episode]) -> list[torch.Tensor]:
    batch = CreditBatch.from_episodes(episodes)
    by_id = turn_advantages(batch, compute("grpo", batch))
    return [by_id[e.episode_id] for e in episodes]


def _signal_eps(category: str, r: float) -> tuple[list[Episode], list[torch.Tensor]]:
    ep = _eps(category, [0.0], f"{category}-x")[0]
    return [ep], [torch.tensor([r])]


def test_worked_example_q_values_and_probabilities() -> None:
    s = SECSampler({"0": {}, "1": {}, "2": {}}, alpha=0.5, tau=1.0)
    e1, a1 = _signal_eps("1", 0.8)
    e2, a2 = _signal_eps("2", 0.4)
    s.update([TaskSpec("1"), TaskSpec("2")], e1 + e2, a1 + a2)
    assert s.q == pytest.approx({"0": 0.0, "1": 0.4, "2": 0.2})
    assert list(s.probs().values()) == pytest.approx([0.269307, 0.40176, 0.328933], abs=1e-6)
    assert list(softmax_probs(s.q, 0.4).values()) == pytest.approx([0.186324, 0.50648, 0.307196], abs=1e-6)
    e0, a0 = _signal_eps("0", 0.6)
    e1, a1 = _signal_eps("1", 0.0)  # arm 1 now solved
    s.update([TaskSpec("0"), TaskSpec("1")], e0 + e1, a0 + a1)
    assert s.q == pytest.approx({"0": 0.3, "1": 0.2, "2": 0.2})
    assert list(s.probs().values()) == pytest.approx([0.355913, 0.322043, 0.322043], abs=1e-6)


def test_reference_mean_abs_advantage_of_binary_groups() -> None:
    one = _eps("c", [1, 0, 0, 0], "g1")
    two = _eps("d", [1, 1, 0, 0], "g2")
    sig = category_signal(one + two, _grpo_adv(one + two))
    assert sig == pytest.approx({"c": 0.75, "d": 0.866024}, abs=1e-5)


def test_third_arm_with_a_learning_signal_passes_one_half_after_three_updates() -> None:
    """Arms solved always / never / exactly 2 of 4 per group, tau 1: 0.51615 after 3 updates."""
    s = SECSampler({"always": {}, "never": {}, "half": {}}, alpha=0.5, tau=1.0)
    u = UniformSampler({"always": {}, "never": {}, "half": {}})
    for step in range(3):
        eps = [*_eps("always", [1, 1, 1, 1], f"a{step}"), *_eps("never", [0, 0, 0, 0], f"n{step}"),
               *_eps("half", [1, 0, 1, 0], f"h{step}")]  # fmt: skip
        specs = [TaskSpec("always"), TaskSpec("never"), TaskSpec("half")]
        s.update(specs, eps, _grpo_adv(eps))
        u.update(specs, eps, _grpo_adv(eps))
    assert s.probs()["half"] == pytest.approx(0.51615, abs=1e-5)
    limit = math.exp(0.866025) / (2 + math.exp(0.866025))
    assert limit == pytest.approx(0.5431, abs=1e-4)
    draws = [t.category for t in s.sample(4000, np.random.default_rng(0))]
    assert abs(draws.count("half") / 4000 - 0.51615) < 0.03
    uni = [t.category for t in u.sample(4000, np.random.default_rng(0))]
    assert abs(uni.count("half") / 4000 - 1 / 3) < 0.03


@settings(max_examples=50, deadline=None)
@given(q=st.lists(st.floats(-5, 5), min_size=1, max_size=6), r=st.lists(st.floats(0, 3), min_size=1, max_size=6),
       alpha=st.floats(0.01, 1.0), tau=st.floats(0.05, 5.0))  # fmt: skip
def test_update_is_a_convex_step_and_probabilities_sum_to_one(q: list[float], r: list[float], alpha: float, tau: float) -> None:
    qd = {str(i): v for i, v in enumerate(q)}
    sig = {str(i): v for i, v in enumerate(r) if i < len(q)}
    new = sec_update(qd, sig, alpha)
    for c, v in new.items():
        lo, hi = sorted((qd[c], sig.get(c, qd[c])))
        assert lo - 1e-12 <= v <= hi + 1e-12
        if c not in sig:
            assert v == qd[c]  # arms not drawn keep their Q
    p = softmax_probs(new, tau)
    assert sum(p.values()) == pytest.approx(1.0) and all(x >= 0 for x in p.values())


def test_sampler_checks_its_knobs() -> None:
    assert isinstance(SECSampler({"a": {}}), TaskSampler)
    with pytest.raises(ValueError, match="at least one category"):
        SECSampler({})
    with pytest.raises(ValueError, match="alpha"):
        SECSampler({"a": {}}, alpha=0.0)
    with pytest.raises(ValueError, match="tau"):
        SECSampler({"a": {}}, tau=0.0)
    with pytest.raises(ValueError, match="meta\\['category'\\]"):
        category_signal([Episode(turns=(Turn(obs_ids=(1,), action_ids=(2,)),))], [torch.zeros(1)])


# ---------------------------------------------------------------------- inside the trainer


class ArmsEnv(TextEnv):
    """One turn; `arm` picks the reward: "always" 1, "never" 0, "mixed" 1 when the reply has an even
    number of characters (varies across a group's samples, so its groups carry advantage)."""

    metadata = {**TextEnv.metadata, "obs_role": "user", "stop": ()}

    def __init__(self, arm: str = "mixed", max_turns: int = 1, split: str = "train", **kw: Any):
        super().__init__(max_turns=max_turns, split=split, **kw)
        self.arm = arm

    def _new_task(self, rng: np.random.Generator, options: dict) -> Task:
        return Task(f"arms/{self.split}/{self.arm}-{int(rng.integers(0, 1000))}", self.split)

    def _first_obs(self) -> str:
        return "Write something."

    def _parse(self, action: str) -> Parsed:
        return Parsed("say", {"text": action}, action)

    def _apply(self, parsed: Parsed) -> Outcome:
        text = parsed.args["text"]
        r = {"always": 1.0, "never": 0.0}.get(self.arm, float(len(text) % 2 == 0))
        return Outcome("", reward=r, terminated=True)

    def _state_key(self) -> str:
        return f"turn{self.turn}"

    def _final_components(self) -> dict[str, float]:
        return {"success": float(self.episode_return > 0)}


@pytest.fixture(scope="module", autouse=True)
def arms_env() -> None:
    import gymnasium

    if ARMS_ENV_ID not in gymnasium.registry:
        gymnasium.register(ARMS_ENV_ID, entry_point=ArmsEnv)


CATEGORIES = {"always": {"arm": "always"}, "never": {"arm": "never"}, "mixed": {"arm": "mixed"}}


def _trainer(cache: Path, out: Path | None, steps: int, curriculum: str = "sec") -> Any:
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig(steps=steps, num_groups=3, group_size=4, max_new_tokens=8, lr=1e-3, tensorboard=False, seed=2,
                     curriculum=curriculum, categories=CATEGORIES, out_dir=str(out) if out else None,
                     checkpoint_every=2 if out else 0, resume=out is not None)  # fmt: skip
    return GRPOTrainer(build_tiny(cache), ARMS_ENV_ID, cfg)


def test_sec_in_the_trainer_moves_toward_the_category_with_a_learning_signal(tiny_cache: Path) -> None:
    tr = _trainer(tiny_cache, None, steps=4)
    assert isinstance(tr.task_sampler, SECSampler)
    tr.train()
    q = tr.task_sampler.q
    assert q["always"] == 0.0 and q["never"] == 0.0 and q["mixed"] > 0.1  # all-equal groups give |A| = 0
    p = tr.task_sampler.probs()
    assert p["mixed"] > 1 / 3 + 0.02 and p["mixed"] > max(p["always"], p["never"])
    assert tr.history[-1]["curriculum/p/mixed"] == p["mixed"]  # logged per step, with each category's share
    assert sum(v for k, v in tr.history[0].items() if k.startswith("curriculum/share/")) == pytest.approx(1.0)


def test_sec_state_resumes_exactly(tiny_cache: Path, tmp_path: Path) -> None:
    straight = _trainer(tiny_cache, tmp_path / "a", steps=4)
    straight.train()
    first = _trainer(tiny_cache, tmp_path / "b", steps=4)
    first.step()
    first.step()
    second = _trainer(tiny_cache, tmp_path / "b", steps=4)
    assert second.step_idx == 2 and second.task_sampler.q == first.task_sampler.q and first.task_sampler.q["mixed"] > 0
    second.train()
    assert second.task_sampler.q == straight.task_sampler.q and straight.task_sampler.q["mixed"] > 0
    assert [m["reward"] for m in second.history] == [m["reward"] for m in straight.history[2:]]


def test_sampler_state_goes_into_checkpoints_only_when_it_has_one(tiny_cache: Path) -> None:
    from creditgym.trainers.curriculum import StatefulSampler, UniformSampler

    assert isinstance(SECSampler(dict(CATEGORIES)), StatefulSampler)
    assert not isinstance(UniformSampler(dict(CATEGORIES)), StatefulSampler)
    sec = _trainer(tiny_cache, None, steps=1)
    state = sec.state_dict()
    assert state["task_sampler"] == {"q": sec.task_sampler.q}
    uniform = _trainer(tiny_cache, None, steps=1, curriculum="uniform")
    assert uniform.state_dict()["task_sampler"] is None
    with pytest.raises(ValueError, match="has no load_state_dict; resume with the run's curriculum"):
        uniform.load_state_dict(state)


def test_trainer_builds_the_configured_curriculum(tiny_cache: Path) -> None:
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    with pytest.raises(ValueError, match="needs categories"):
        GRPOTrainer(build_tiny(tiny_cache), ARMS_ENV_ID, GRPOConfig(curriculum="sec", tensorboard=False))
    with pytest.raises(ValueError, match="unknown curriculum"):
        GRPOTrainer(build_tiny(tiny_cache), ARMS_ENV_ID, GRPOConfig(curriculum="nope", tensorboard=False))
    tr = GRPOTrainer(build_tiny(tiny_cache), ARMS_ENV_ID,
                     GRPOConfig(curriculum="sec", categories=CATEGORIES, curriculum_cfg={"tau": 0.4}, tensorboard=False))  # fmt: skip
    assert tr.task_sampler.tau == 0.4
    search = GRPOTrainer(build_tiny(tiny_cache), "creditgym/Search-v0", GRPOConfig(curriculum="sec", tensorboard=False))
    assert set(search.task_sampler.q) == {"easy", "medium", "hard"}  # the env's difficulty presets


class RecordingSampler(UniformSampler):
    def __init__(self) -> None:
        super().__init__(dict(CATEGORIES))
        self.seen: list[tuple[list[TaskSpec], list[Episode], list[torch.Tensor]]] = []

    def update(self, specs: Any, episodes: Any, advantages: Any) -> None:
        self.seen.append((list(specs), list(episodes), list(advantages)))


def test_groups_dropped_by_dynamic_sampling_reach_the_sampler_with_zero_advantage(tiny_cache: Path) -> None:
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    sampler = RecordingSampler()
    cfg = GRPOConfig(steps=1, num_groups=3, group_size=4, max_new_tokens=8, tensorboard=False, seed=2,
                     dynamic_sampling=True, allow_short_batch=True, dynamic_sampling_max_batches=2)  # fmt: skip
    tr = GRPOTrainer(build_tiny(tiny_cache), ARMS_ENV_ID, cfg, task_sampler=sampler)
    tr.train()
    assert len(sampler.seen) == tr.history[0]["ds/gen_rounds"] == 2  # every generation round, after credit
    for specs, eps, advs in sampler.seen:
        assert len(eps) == len(advs) == 4 * len(specs)
        for e, a in zip(eps, advs):
            assert a.shape == (e.num_turns,)
            if e.meta["category"] != "mixed":  # all-equal groups: dropped, zero advantage
                assert torch.equal(a, torch.zeros(1))
    mixed = [a for _, eps, advs in sampler.seen for e, a in zip(eps, advs) if e.meta["category"] == "mixed"]
    assert any(float(a.abs().sum()) > 0 for a in mixed)
