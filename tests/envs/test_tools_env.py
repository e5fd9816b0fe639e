"""ToolsEnv: checker per id, tasks and splits, observations, files through python, replay, experts."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest

import creditgym
from creditgym.agents.base import Context
from creditgym.agents.scripted import success_rate
from creditgym.envs.tools import ToolsEnv, build_task, generate_task
from creditgym.envs.tools.tasks import HELDOUT_KINDS, split_of

IDS = ["creditgym/Tools-v0", "creditgym/ToolsPython-v0"]


def call(name: str, args: dict) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id: str) -> None:
    creditgym.check_env(env_id)


def test_check_env_at_subprocess_level() -> None:
    creditgym.check_env("creditgym/Tools-v0", sandbox="subprocess", n_seeds=3)


def test_metadata_and_reset_observation() -> None:
    env = gymnasium.make("creditgym/Tools-v0")
    assert env.unwrapped.metadata["obs_role"] == "tool"
    obs, info = env.reset(seed=0)
    assert obs.startswith("Solve the task. You may call tools.")
    assert "<tools>\n{\"type\": \"function\"" in obs and "You have 8 replies." in obs
    assert info["task_id"].startswith("tools/train/") and info["gold"]
    env.close()


def test_tasks_rebuild_from_id_and_splits_are_disjoint() -> None:
    rng = np.random.default_rng(0)
    seen: dict[str, set[str]] = {}
    for split in ("train", "test", "heldout"):
        seen[split] = set()
        for d in (1, 2, 3):
            for _ in range(8):
                t = generate_task(rng, split, difficulty=d)
                assert t.split == split and t.task_id.startswith(f"tools/{split}/")
                ttype, _, kind, _ = t.task_id.split("/")[2].split("-")
                assert split_of(ttype, kind, t.task_id.split("/")[2]) == split
                assert build_task(t.task_id) == t
                seen[split].add(t.task_id.split("/")[2])
                if split != "heldout":
                    assert kind not in HELDOUT_KINDS.get(ttype, {}).get(d, ())
    assert not (seen["train"] & seen["test"]) and not (seen["train"] & seen["heldout"])


def test_heldout_has_reserved_cells() -> None:
    rng = np.random.default_rng(1)
    kinds = {generate_task(rng, "heldout", ("table", "lookup"), 3).private["kind"] for _ in range(30)}
    assert {"join", "mix"} <= kinds


def test_tool_results_info_and_state_key() -> None:
    env = ToolsEnv(task_types=("lookup",), tools=("kv", "calculator"))
    obs, info = env.reset(seed=0)
    key0 = info["state_key"]
    assert key0.startswith(f"tools|{info['task_id']}|t=0|fs=") and "|kv=" in key0 and "|seen=" in key0
    obs, r, term, trunc, info = env.step(call("kv_get", {"key": "SKU-0000"}) + call("calculator", {"expression": "2*21"}))
    assert obs.count("<tool_response>\n") == 2 and not term
    results = [json.loads(x) for x in info["tool_results"]]
    assert results[0] == {"name": "kv_get", "ok": False, "error": "no such key 'SKU-0000'; list keys with kv_list"}
    assert results[1] == {"name": "calculator", "ok": True, "result": "42"}
    assert obs == "\n".join(f"<tool_response>\n{c}\n</tool_response>" for c in info["tool_results"])
    assert info["invalid"] is False and info["state_key"] != key0
    obs, *_, info = env.step(call("kv_set", {"key": "a", "value": "b"}))
    assert "|kv=" in info["state_key"]


def test_runtime_failures_are_not_invalid() -> None:
    env = ToolsEnv(task_types=("arith",), tools=("calculator",))
    env.reset(seed=0)
    obs, *_, info = env.step(call("calculator", {"expression": "1/0"}))
    assert info["invalid"] is False and '"ok": false' in obs and "division by zero" in obs
    obs, *_, info = env.step(call("calculator", {}))
    assert info["invalid"] is True and "'expression' is a required property at $" in obs


def test_files_round_trip_through_python_and_replay_uses_the_log() -> None:
    env = ToolsEnv(task_types=("text",), tools=("python", "files"))
    env.reset(seed=0)
    code = "import random\nopen('out.txt', 'w').write(str(random.random()))\nprint(open('notes.txt').read().split()[0])"
    _, _, _, _, info = env.step(call("python", {"code": code}))
    res = json.loads(info["tool_results"][0])
    assert res["ok"] is True and res["result"]["exit_code"] == 0 and info["sandbox"]["network_isolated"] is True
    _, _, _, _, info2 = env.step(call("read_file", {"path": "out.txt"}))
    value = json.loads(info2["tool_results"][0])["result"]["content"]
    state = env.unwrapped.get_state() if hasattr(env, "unwrapped") else env.get_state()
    assert [e[0] for e in state["backend_log"]]  # the python run was logged
    env.set_state(state)  # replays the random value from the response log, not a new run
    _, _, _, _, info3 = env.step(call("read_file", {"path": "out.txt"}))
    assert json.loads(info3["tool_results"][0])["result"]["content"] == value
    env.close()


def test_mcp_tasks_from_jsonl(tmp_path) -> None:
    path = tmp_path / "tasks.jsonl"
    rows = [{"task": f"What is {i} + {i}?", "gold": str(2 * i), "check": "numeric"} for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    env = ToolsEnv(tasks_path=str(path), tools=("calculator",))
    obs, info = env.reset(seed=0)
    n = int(obs.split("What is ")[1].split(" +")[0])
    _, r, term, _, _ = env.step(f"<answer>{2 * n}</answer>")
    assert term and r == 1.0
    obs2, _ = env.reset(options={"task_id": info["task_id"]})
    assert obs2 == obs


def _rate(env_id: str, which: str, seeds: int, **kw: object) -> float:
    return success_rate(env_id, which, range(seeds), split=None, env_kwargs=kw, rng=np.random.default_rng(0))


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_expert_target(env_id: str, difficulty: int) -> None:
    assert _rate(env_id, "expert", 5, split="test", difficulty=difficulty) >= 0.98


def test_expert_on_heldout_cells() -> None:
    assert _rate("creditgym/Tools-v0", "expert", 6, split="heldout", difficulty=3, task_types=("table", "lookup")) >= 0.98


@pytest.mark.parametrize(("env_id", "seeds"), [(IDS[0], 20), (IDS[1], 8)])
def test_random_ceiling(env_id: str, seeds: int) -> None:
    assert _rate(env_id, "random", seeds, split="test") <= 0.05


def test_scripted_policies_generate() -> None:
    from creditgym.agents import scripted
    from creditgym.agents.base import Sampling

    env = gymnasium.make("creditgym/Tools-v0", tools=("calculator", "kv"), task_types=("arith", "lookup"))
    obs, _ = env.reset(seed=0)
    for cls in (scripted.ScriptedPolicy, scripted.RandomPolicy):
        gen = cls.for_env("creditgym/Tools-v0").generate([Context(obs_texts=[obs])], Sampling())[0]
        assert gen.text and gen.token_ids


def _shipped_lines(split: str) -> list[bytes]:
    import gzip
    import os

    from creditgym.envs.tools.build_data import DATA_DIR

    with gzip.open(os.path.join(DATA_DIR, f"tasks_{split}.jsonl.gz")) as f:
        return f.read().splitlines()


@pytest.mark.parametrize("split", ["train", "test", "heldout"])
def test_data_matches_generator_prefix(split: str) -> None:
    import gzip

    from creditgym.envs.tools.build_data import build_split

    shipped = _shipped_lines(split)
    assert len(shipped) == 500
    assert gzip.decompress(build_split(split, n=40)).splitlines() == shipped[:40]


@pytest.mark.slow
def test_data_matches_generator() -> None:
    import os

    from creditgym.envs.tools.build_data import DATA_DIR, build_split

    for split in ("train", "test", "heldout"):
        with open(os.path.join(DATA_DIR, f"tasks_{split}.jsonl.gz"), "rb") as f:
            assert f.read() == build_split(split), f"rerun python -m creditgym.envs.tools.build_data ({split})"


def test_collector_runs_the_expert() -> None:
    rollout = pytest.importorskip("creditgym.agents.rollout", reason="the Collector has not landed")
    from creditgym.agents.scripted import ScriptedPolicy

    col = rollout.Collector(ScriptedPolicy.for_env("creditgym/Tools-v0"), "creditgym/Tools-v0", group_size=2)
    episodes = col.collect(num_groups=2, seed=0)
    assert len(episodes) == 4 and all(e.outcome["success"] == 1.0 for e in episodes)
