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


# --------------------------------------------------------------------------- bounded log, total step
WRITE_60MB = ("import os, random\ntag = str(random.random())\nfor i in range(60):\n"
              "    open('big%02d.txt' % i, 'w').write(tag[:8] + 'x' * (1_000_000 - 8))\nprint(tag)\n")


def _logged_bytes(env: ToolsEnv) -> int:
    return sum(len(json.dumps(e, ensure_ascii=False).encode()) for e in env._backend_log)


def test_python_log_stays_under_the_byte_cap_and_replay_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    env = ToolsEnv(task_types=("text",), tools=("python", "files"), max_turns=4)
    env.reset(seed=3)
    actions = [call("python", {"code": WRITE_60MB}),
               call("python", {"code": "import os\nprint(len(os.listdir('.')), os.path.getsize('big00.txt'))"}),
               call("list_files", {})]
    live = [env.step(a) for a in actions]
    res = json.loads(live[0][4]["tool_results"][0])
    # The run wrote 60 MB; the store kept what fits the episode's 4 MB budget and said what it dropped.
    assert res["ok"] is True and len(res["result"]["files_not_kept"]) == 56
    assert sum(len(v) for v in env._files.values()) <= env.max_file_bytes_per_episode + 100_000
    cap = env.max_file_bytes_per_episode + 64_000  # the budget plus the cut results of 2 calls
    assert _logged_bytes(env) <= cap, _logged_bytes(env)
    state = env.get_state()
    obs_live = live[-1][0]

    # Replay on a fresh env whose sandbox must not be called: everything comes from the log.
    other = ToolsEnv(task_types=("text",), tools=("python", "files"), max_turns=4)
    monkeypatch.setattr(other.sandbox, "run", lambda *a, **k: pytest.fail("replay ran the sandbox"))
    other.set_state(state)
    assert other._files == env._files and other._state_key() == env._state_key()
    assert other.render() == obs_live
    for e in (env, other):
        obs, *_ = e.step(call("read_file", {"path": "big00.txt", "limit": 20}))
    assert obs == env.render()
    env.close()
    other.close()


def test_python_log_keeps_no_full_output() -> None:
    env = ToolsEnv(task_types=("arith",), tools=("python",), max_output_chars=100)
    env.reset(seed=0)
    env.step(call("python", {"code": "print('y' * 500_000)"}))
    assert _logged_bytes(env) < 5_000
    env.close()


@pytest.mark.parametrize("expr", ["(-8)**0.5", "(-8) ** -0.5", "abs((-1) ** 0.5)"])
def test_calculator_complex_result_is_a_tool_error(expr: str) -> None:
    env = ToolsEnv(task_types=("arith",), tools=("calculator",))
    env.reset(seed=0)
    obs, _, _, _, info = env.step(call("calculator", {"expression": expr}))
    assert info["invalid"] is False and '"ok": false' in obs and "not a real number" in obs


@pytest.mark.parametrize("path", ["a\u0000b.txt", "x/\u0007.txt", "é" * 200])
def test_unusable_paths_are_refused_and_python_keeps_working(path: str) -> None:
    env = ToolsEnv(task_types=("text",), tools=("python", "files"))
    env.reset(seed=0)
    obs, _, _, _, info = env.step(call("write_file", {"path": path, "content": "x"}))
    assert info["invalid"] is False and '"ok": false' in obs and path not in env._files
    obs, _, _, _, info = env.step(call("python", {"code": "print(6 * 7)"}))
    assert json.loads(info["tool_results"][0])["result"]["stdout"] == "42\n"
    env.close()


def test_file_directory_clashes_are_refused() -> None:
    env = ToolsEnv(task_types=("text",), tools=("python", "files"))
    env.reset(seed=0)
    assert '"ok": true' in env.step(call("write_file", {"path": "a", "content": "1"}))[0]
    assert "is a file, not a directory" in env.step(call("write_file", {"path": "a/b", "content": "2"}))[0]
    assert '"ok": true' in env.step(call("write_file", {"path": "d/e", "content": "3"}))[0]
    assert "is a directory" in env.step(call("write_file", {"path": "d", "content": "4"}))[0]
    _, _, _, _, info = env.step(call("python", {"code": "print(open('a').read(), open('d/e').read())"}))
    assert json.loads(info["tool_results"][0])["result"]["stdout"] == "1 3\n"
    env.close()


def test_lone_surrogates_in_arguments_never_reach_an_observation() -> None:
    env = ToolsEnv(task_types=("text",), tools=("python", "files", "kv"))
    env.reset(seed=0)
    raw = '"\\ud800 \\udfff"'  # JSON escapes that decode to lone surrogates
    code = raw.replace('"', "'")
    actions = [
        f'<tool_call>{{"name": "write_file", "arguments": {{"path": "s.txt", "content": {raw}}}}}</tool_call>',
        '<tool_call>{"name": "read_file", "arguments": {"path": "s.txt"}}</tool_call>',
        f'<tool_call>{{"name": "kv_set", "arguments": {{"key": {raw}, "value": {raw}}}}}</tool_call>',
        '<tool_call>{"name": "kv_list", "arguments": {}}</tool_call>',
        f'<tool_call>{{"name": "python", "arguments": {{"code": "print({code})"}}}}</tool_call>',
        '<tool_call>{"name": "list_files", "arguments": {}}</tool_call>',
    ]
    for a in actions:
        obs, _, _, _, info = env.step(a)
        obs.encode("utf-8")
        for r in info.get("tool_results", []):
            r.encode("utf-8")
    env.close()


def test_non_utf8_names_from_python_list_as_valid_text() -> None:
    env = ToolsEnv(task_types=("text",), tools=("python", "files"))
    env.reset(seed=0)
    env.step(call("python", {"code": "open(b'bad-\\xff\\xfe.txt', 'wb').write(b'\\xff ok')"}))
    obs, _, _, _, info = env.step(call("list_files", {}))
    obs.encode("utf-8")
    assert "bad-\ufffd\ufffd.txt" in json.loads(info["tool_results"][0])["result"]
    obs, *_ = env.step(call("read_file", {"path": "bad-\ufffd\ufffd.txt"}))
    assert "\\ufffd ok" in obs or "\ufffd ok" in obs
    env.close()


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=40)  # NUL, controls, lone surrogates
_BUILTIN_CALLS = st.one_of(
    st.builds(lambda p, c: ("write_file", {"path": p or "x", "content": c}), _ANY_TEXT, _ANY_TEXT),
    st.builds(lambda p: ("read_file", {"path": p or "x"}), _ANY_TEXT),
    st.builds(lambda p: ("list_files", {"prefix": p}), _ANY_TEXT),
    st.builds(lambda k, v: ("kv_set", {"key": k or "k", "value": v}), _ANY_TEXT, _ANY_TEXT),
    st.builds(lambda k: ("kv_get", {"key": k or "k"}), _ANY_TEXT),
    st.builds(lambda e: ("calculator", {"expression": e or "1"}), _ANY_TEXT),
)
_FUZZ_ENV = ToolsEnv(task_types=("text",), tools=("calculator", "files", "kv", "python"), max_turns=10**6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_BUILTIN_CALLS, min_size=1, max_size=4))
def test_builtin_tools_are_total_and_observations_are_utf8(calls: list) -> None:
    """Any arguments to the built-in tools give tool results (ok or not) in valid UTF-8, and every
    stored file can be written into a python work dir (no stored name can break the sandbox's copy)."""
    import tempfile

    from creditgym.envs.tools.process import write_files

    env = _FUZZ_ENV
    env.reset(seed=0)
    for name, args in calls:
        action = "<tool_call>" + json.dumps({"name": name, "arguments": args}, ensure_ascii=True) + "</tool_call>"
        obs, _, _, _, info = env.step(action)
        obs.encode("utf-8")
        for r in info.get("tool_results", []):
            assert json.loads(r)["name"] == name
    assert all(n.encode("utf-8") for n in env._files)
    with tempfile.TemporaryDirectory() as d:
        assert write_files(d, env._files) == []
