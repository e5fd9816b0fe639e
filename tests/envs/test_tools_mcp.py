"""MCP client: a stdio MCP server (tests/envs/_tools_mcp_server.py) becomes env tools."""

from __future__ import annotations

import json
import os
import sys

import pytest

pytest.importorskip("mcp", reason="the MCP SDK is not installed (pip install 'creditgym[mcp]')")

from creditgym.envs.tools import ToolsEnv
from creditgym.envs.tools.mcp_client import MCPClient, MCPError

SERVER = os.path.join(os.path.dirname(__file__), "_tools_mcp_server.py")
SPEC = {"name": "srv", "command": sys.executable, "args": [SERVER]}


def call(name: str, args: dict) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


@pytest.fixture(scope="module")
def env() -> ToolsEnv:
    e = ToolsEnv(task_types=("arith",), tools=("calculator",), mcp_servers=[SPEC], timeout_s=1.0, max_turns=20)
    yield e
    e.close()


def test_tools_are_listed_with_their_schemas(env: ToolsEnv) -> None:
    obs, _ = env.reset(seed=0)
    for name in ("srv__add", "srv__slow", "srv__fail", "srv__die"):
        assert f'"name": "{name}"' in obs
    add = env.declarations["srv__add"]["function"]
    assert add["parameters"]["required"] == ["a", "b"] and add["description"] == "Add two integers."


def test_call_schema_error_and_tool_error(env: ToolsEnv) -> None:
    env.reset(seed=0)
    _, _, _, _, info = env.step(call("srv__add", {"a": 2, "b": 40}))
    assert json.loads(info["tool_results"][0]) == {"name": "srv__add", "ok": True, "result": "42"}
    obs, _, _, _, info = env.step(call("srv__add", {"a": "two"}))
    assert info["invalid"] is True and "'b' is a required property at $" in obs
    _, _, _, _, info = env.step(call("srv__fail", {"message": "boom"}))
    res = json.loads(info["tool_results"][0])
    assert res["ok"] is False and "boom" in res["error"] and info["invalid"] is False


def test_timeout_then_still_usable(env: ToolsEnv) -> None:
    env.reset(seed=1)
    _, _, _, _, info = env.step(call("srv__slow", {"seconds": 3}))
    assert json.loads(info["tool_results"][0]) == {"name": "srv__slow", "ok": False, "error": "timed out after 1 s"}
    _, _, _, _, info = env.step(call("srv__add", {"a": 1, "b": 1}))
    assert json.loads(info["tool_results"][0]).get("result") == "2", info["tool_results"]


def test_replay_uses_the_response_log(env: ToolsEnv) -> None:
    env.reset(seed=2)
    env.step(call("srv__add", {"a": 5, "b": 5}))
    state = env.get_state()
    assert len(state["backend_log"]) == 1
    env.set_state(state)
    assert env.turn == 1


def test_bad_server_raises_at_construction() -> None:
    with pytest.raises(MCPError, match=r"failed to start|did not initialize"):
        MCPClient([{"name": "bad", "command": sys.executable, "args": ["-c", "import sys; sys.exit(1)"]}],
                  start_timeout_s=10)
    with pytest.raises(MCPError, match="needs 'command'"):
        MCPClient([{"name": "x"}])


def test_server_death_gives_error_results(env: ToolsEnv) -> None:
    # Runs last on the shared server: `die` ends the server process.
    env.reset(seed=3)
    _, _, _, _, info = env.step(call("srv__die", {}))
    assert json.loads(info["tool_results"][0])["ok"] is False
    _, _, term, _, info = env.step(call("srv__add", {"a": 1, "b": 2}))
    after = json.loads(info["tool_results"][0])
    assert after["ok"] is False and "srv" in after["error"] and info["invalid"] is False and not term
    assert env.step("<answer>1</answer>")[2] is True  # the env keeps working
