"""Tools rewards by hand: binary, ReTool, ToolRL, tool cost, OTC-PPO, invalid penalty, truncation."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditgym.envs.tools import ToolsEnv
from creditgym.envs.tools.rewards import check_answer, otc_ppo_tool, parse_number, toolrl_correct


def calc(expr: str) -> str:
    return "<tool_call>\n" + json.dumps({"name": "calculator", "arguments": {"expression": expr}}) + "\n</tool_call>"


def arith_env(**kw: object) -> tuple[ToolsEnv, str, str]:
    env = ToolsEnv(task_types=("arith",), tools=("calculator",), **kw)
    obs, info = env.reset(seed=3)
    expr = obs.split("Compute ", 1)[1].split(". Give", 1)[0]
    return env, expr, info["gold"][0]


def run(env: ToolsEnv, actions: list[str]) -> tuple[list[float], dict]:
    rewards, info = [], {}
    for a in actions:
        _, r, term, trunc, info = env.step(a)
        rewards.append(r)
        if term or trunc:
            break
    return rewards, info


def test_otc_ppo_worked_example() -> None:
    # METHODS.md section 5, c = 1
    got = [otc_ppo_tool(m, 1.0) for m in range(4)]
    assert got == pytest.approx([1.0, 0.5, 0.309017, 0.222521], abs=1e-6)


def test_toolrl_correct_by_hand() -> None:
    g = [{"name": "calculator", "arguments": {"expression": "1+1"}}]
    assert toolrl_correct(g, g) == pytest.approx(3.0)
    assert toolrl_correct([], g) == pytest.approx(-3.0)
    wrong_value = [{"name": "calculator", "arguments": {"expression": "2+2"}}]
    assert toolrl_correct(wrong_value, g) == pytest.approx(1.0)  # (1 + 1 + 0) / 3 * 6 - 3
    two = [{"name": "kv_get", "arguments": {"key": "a"}}, {"name": "kv_get", "arguments": {"key": "b"}}]
    assert toolrl_correct(two[:1], two) == pytest.approx(0.6)  # (1 + 1 + 1) / 5 * 6 - 3
    other = [{"name": "python", "arguments": {"code": "x"}}]
    assert toolrl_correct(other, g) == pytest.approx(-3.0)
    mixed = other + g
    assert toolrl_correct(mixed, g) == pytest.approx(6 * (0.5 + 1 + 1) / 3 - 3)
    assert toolrl_correct([], []) == pytest.approx(3.0)


name_st = st.sampled_from(["a", "b", "c"])
call_st = st.fixed_dictionaries({"name": name_st, "arguments": st.dictionaries(name_st, st.integers(0, 2), max_size=3)})


@given(st.lists(call_st, max_size=4), st.lists(call_st, max_size=4))
def test_toolrl_correct_in_range(pred: list, gold: list) -> None:
    r = toolrl_correct(pred, gold)
    assert -3.0 - 1e-9 <= r <= 3.0 + 1e-9
    assert toolrl_correct(gold, gold) == pytest.approx(3.0)


def test_check_answer_numbers_and_text() -> None:
    assert check_answer("$1,234.50", ("1234.5",))
    assert check_answer("1234.5000001", ("1234.5",))
    assert not check_answer("1234.51", ("1234.5",))
    assert not check_answer("about 12", ("12",))
    assert check_answer("The North", ("north",), "em")
    assert check_answer("it is 42 I think", ("42",), "contains")
    assert parse_number(" - ") is None and parse_number("1e3") == 1000.0


def test_binary_reward() -> None:
    env, expr, gold = arith_env()
    rewards, info = run(env, [calc(expr), f"<answer>{gold}</answer>"])
    assert rewards == [0.0, 1.0]
    c = info["reward_components"]
    assert c["success"] == 1.0 and c["correct"] == 1.0 and c["n_calls"] == 1 and c["format"] == 1.0
    assert c["answer"] + c["tool_cost"] + c["invalid"] == c["return"] == 1.0
    env.reset(seed=3)
    assert run(env, ["<answer>-1</answer>"])[0] == [0.0]


def test_retool_reward_and_truncation_pays_minus_one() -> None:
    env, expr, gold = arith_env(reward="retool", max_turns=2)
    assert run(env, [f"<answer>{gold}</answer>"])[0] == [1.0]
    env.reset(seed=3)
    assert run(env, ["<answer>0</answer>"])[0] == [-1.0]
    env.reset(seed=3)
    rewards, info = run(env, [calc("1"), calc("2")])
    assert rewards == [0.0, -1.0] and info["reward_components"]["success"] == 0.0
    assert info["reward_components"]["return"] == -1.0


def test_toolrl_reward_in_env() -> None:
    env, expr, gold = arith_env(reward="toolrl")
    rewards, info = run(env, [calc(expr), f"<answer>{gold}</answer>"])
    assert rewards == [0.0, pytest.approx(4.0)]  # format 1 + R_correct 3
    env.reset(seed=3)
    rewards, _ = run(env, ["oops", calc("1+1"), "<answer>0</answer>"])
    assert rewards[-1] == pytest.approx(0.0 + 6 * 2 / 3 - 3)  # an invalid reply costs the format point


def test_tool_cost_invalid_penalty_and_otc() -> None:
    env, expr, gold = arith_env(tool_cost=0.1, invalid_penalty=-0.5, otc="ppo")
    rewards, info = run(env, ["nothing", calc("1") + calc(expr), f"<answer>{gold}</answer>"])
    assert rewards[0] == -0.5 and rewards[1] == pytest.approx(-0.2)
    assert rewards[2] == pytest.approx(math.cos(2 * math.pi / 5))  # m = 2 calls, c = 1
    c = info["reward_components"]
    assert c["tool_cost"] == pytest.approx(-0.2) and c["invalid"] == -0.5 and c["n_invalid"] == 1
    assert c["otc_tool"] == pytest.approx(0.309017, abs=1e-6)
    assert c["answer"] + c["tool_cost"] + c["invalid"] == pytest.approx(c["return"])


def test_bad_configuration_raises() -> None:
    with pytest.raises(ValueError, match="reward must be one of"):
        ToolsEnv(reward="nope", tools=("calculator",), task_types=("arith",))
    with pytest.raises(ValueError, match="needs the python"):
        ToolsEnv(task_types=("table",), tools=("calculator",))
    with pytest.raises(ValueError, match="unknown tools"):
        ToolsEnv(tools=("shell",))
