"""OTC (arXiv 2504.14870, METHODS.md 5): the worked values, OTC-GRPO as a reward transform for
Search (searches) and Tools (tool calls), and tool productivity in training logs and evaluation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from _trainer_helpers import build_tiny
from hypothesis import given
from hypothesis import strategies as st

from creditgym import Episode, Turn
from creditgym.envs.search import otc_grpo, otc_grpo_tool, otc_ppo_tool
from creditgym.trainers.rewards import OTCGRPO, tool_metrics


def test_worked_values() -> None:
    assert [otc_ppo_tool(m, 1.0) for m in (0, 1, 2, 3)] == pytest.approx([1.0, 0.5, 0.309017, 0.222521], abs=1e-6)
    pairs = {(2, 1): 0.866025, (1, 1): 1.0, (3, 1): 0.707107, (0, 0): 1.0, (2, 0): 0.309017, (4, 2): 0.866025}
    for (m, n), want in pairs.items():
        assert otc_grpo_tool(m, n, 1.0) == pytest.approx(want, abs=1e-6), (m, n)


def _search_ep(m: int, em: float, group: str = "g", search_cost: float = 0.0) -> Episode:
    """A Search episode: m searches (each paying `search_cost`), then an answer worth em."""
    turns = [Turn(obs_ids=(1,), action_ids=(2,), reward=search_cost) for _ in range(m)]
    turns.append(Turn(obs_ids=(1,), action_ids=(2,), reward=em))
    return Episode(turns=tuple(turns), group_id=group,
                   outcome={"answer": em, "em": em, "success": em, "n_search": float(m),
                            "search_cost": search_cost * m})  # fmt: skip


def _tools_ep(m: int, correct: float, group: str = "g") -> Episode:
    turns = (Turn(obs_ids=(1,), action_ids=(2,), reward=0.0), Turn(obs_ids=(1,), action_ids=(2,), reward=correct))
    return Episode(turns=turns, group_id=group,
                   outcome={"answer": correct, "correct": correct, "success": correct, "n_calls": float(m)})  # fmt: skip


def test_otc_grpo_transform_on_search_groups() -> None:
    # group g: correct with 1, 2, 3 searches and a wrong one with 0 -> n = 1; group h: nobody correct -> n = 0
    eps = [_search_ep(1, 1.0), _search_ep(2, 1.0, search_cost=-0.1), _search_ep(3, 1.0), _search_ep(0, 0.0),
           _search_ep(2, 0.0, group="h"), _search_ep(0, 0.0, group="h")]  # fmt: skip
    out, state = OTCGRPO(c=1.0)(eps, {})
    assert [round(e.turns[-1].reward, 6) for e in out] == [1.0, 0.866025, 0.707107, 0.0, 0.0, 0.0]
    assert out[1].total_reward == pytest.approx(0.866025 - 0.2, abs=1e-6)  # the search cost is kept
    assert [round(e.outcome["otc_tool"], 6) for e in out] == [1.0, 0.866025, 0.707107, 0.0, 0.309017, 1.0]
    assert out[1].outcome["em"] == 1.0 and eps[1].turns[-1].reward == 1.0  # the env's numbers stay
    assert state["metrics"]["mean_r_tool"] == pytest.approx((1 + 0.866025 + 0.707107 + 0 + 0.309017 + 1) / 6, abs=1e-6)
    # the same rewards as the Search family's own batch function
    assert [e.total_reward for e in out] == pytest.approx([e.total_reward for e in otc_grpo(eps, c=1.0)])


def test_otc_grpo_transform_counts_tool_calls_on_tools_episodes() -> None:
    eps = [_tools_ep(2, 1.0), _tools_ep(4, 1.0), _tools_ep(1, 0.0)]
    out, _ = OTCGRPO()(eps, {})
    assert [round(e.total_reward, 6) for e in out] == [1.0, round(math.sin((16 / 6) * math.pi / 4), 6), 0.0]
    assert out[1].total_reward == pytest.approx(0.866025, abs=1e-6)  # (m, n) = (4, 2)
    with pytest.raises(ValueError, match="c > 0"):
        OTCGRPO(c=0.0)


@given(ms=st.lists(st.integers(0, 8), min_size=1, max_size=8), correct=st.lists(st.booleans(), min_size=8, max_size=8))
def test_fewest_correct_calls_earn_the_full_answer_reward(ms: list[int], correct: list[bool]) -> None:
    eps = [_search_ep(m, float(ok)) for m, ok in zip(ms, correct)]
    out, _ = OTCGRPO()(eps, {})
    rewards = [e.turns[-1].reward for e in out]
    right = [i for i, e in enumerate(eps) if e.outcome["em"] == 1.0]
    for i, r in enumerate(rewards):
        assert 0.0 <= r <= 1.0 + 1e-12 and (r == 0.0 if i not in right else True)
    if right:
        n = min(ms[i] for i in right)
        assert all(rewards[i] == pytest.approx(1.0) for i in right if ms[i] == n)


def test_tool_productivity_is_correct_answers_per_call() -> None:
    eps = [_search_ep(1, 1.0), _search_ep(3, 1.0), _search_ep(2, 0.0), _tools_ep(2, 1.0)]
    assert tool_metrics(eps) == {"tool_calls": 2.0, "tool_productivity": 3 / 8}
    assert tool_metrics([Episode(turns=(Turn(obs_ids=(1,), action_ids=(2,)),), outcome={"success": 1.0})]) == {}


def test_otc_grpo_by_name_in_the_trainer_logs_tool_metrics(tiny_cache: Path) -> None:
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig(steps=1, num_groups=1, group_size=2, max_new_tokens=8, tensorboard=False,
                     reward_transforms=["otc_grpo"], reward_transform_cfg={"otc_grpo": {"c": 1.0}},
                     env_kwargs={"max_turns": 2})  # fmt: skip
    tr = GRPOTrainer(build_tiny(tiny_cache), "creditgym/SearchEasy-v0", cfg)
    m = tr.train()
    assert {"tool_calls", "tool_productivity", "reward/otc_grpo/mean_r_tool"} <= set(m)


def test_evaluation_reports_tool_productivity() -> None:
    from creditgym.agents import ScriptedPolicy
    from creditgym.trainers.evaluate import evaluate

    res = evaluate(ScriptedPolicy.for_env("creditgym/SearchEasy-v0"), "creditgym/SearchEasy-v0", n_eval=3, samples=2)
    m = res.metrics
    assert m["tool_calls"] >= 1.0 and m["tool_productivity"] == pytest.approx(res.success * 6 / (m["tool_calls"] * 6))
    assert {"pass@1", "maj@2"} <= set(m) and res.to_dict()["metrics"] == m


def test_a_wrong_answer_keeps_its_penalty_but_earns_nothing() -> None:
    wrong = Episode(turns=(Turn(obs_ids=(1,), action_ids=(2,), reward=-1.0),), group_id="g",
                    outcome={"answer": -1.0, "correct": 0.0, "n_calls": 1.0})  # fmt: skip
    out, _ = OTCGRPO()([wrong, _tools_ep(1, 1.0)], {})
    assert [e.total_reward for e in out] == [-1.0, 1.0]
