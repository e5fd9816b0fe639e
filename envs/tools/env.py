"""ToolsEnv: tool calling with JSON-schema tools, a sandboxed Python executor and MCP tools.

ENVS.md section 3. The agent writes `<tool_call>{"name", "arguments"}</tool_call>` blocks (several
per reply) or a final `<answer>`; results come back one `<tool_response>` per call, and
`info["tool_results"]` holds each bare content string so the Collector renders one `tool` message
per call. Rewards: binary, ReTool (arXiv 2504.11536), ToolRL (arXiv 2504.13958), per-call cost and
OTC-PPO (arXiv 2504.14870).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from creditgym.envs.base import Invalid, Outcome, Parsed, Task, TextEnv, split_of_key
from creditgym.envs.tools import rewards, tasks
from creditgym.envs.tools.builtin import error, ok, run_builtin
from creditgym.envs.tools.sandbox import SandboxLimits, make_sandbox
from creditgym.envs.tools.schema import BUILTIN_DECLARATIONS, TOOL_GROUPS, ParsedReply, ToolCall, parse_reply

__all__ = ["ToolsEnv"]

log = logging.getLogger(__name__)

REWARDS = ("binary", "retool", "toolrl")
PROMPT = """Solve the task. You may call tools. A call is a block
<tool_call>
{{"name": "<tool>", "arguments": {{...}}}}
</tool_call>
and one reply may hold several. Results come back inside <tool_response>...</tool_response>.
When done, reply with <answer>final answer</answer> and no tool calls.
<tools>
{tools}
</tools>
You have {max_turns} replies.
Task: {task}"""


def _sha(obj: Any, n: int) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode()).hexdigest()[:n]


class ToolsEnv(TextEnv):
    """Tasks that need tools (arith, table, lookup, text, or a user's jsonl with MCP tools)."""

    metadata = {**TextEnv.metadata, "obs_role": "tool", "stop": ("</answer>",)}

    def __init__(
        self,
        split: str = "train",
        task_types: Sequence[str] = ("arith", "table", "lookup", "text"),
        difficulty: int | Sequence[int] = 1,
        tools: Sequence[str] = ("calculator", "python", "files", "kv"),
        sandbox: str = "auto",
        timeout_s: float = 5.0,
        memory_mb: int = 512,
        max_output_chars: int = 2000,
        max_calls_per_turn: int = 4,
        max_turns: int = 8,
        reward: str = "binary",
        tool_cost: float = 0.0,
        otc: str | None = None,
        otc_c: float = 1.0,
        invalid_penalty: float = 0.0,
        mcp_servers: Sequence[Mapping[str, Any]] = (),
        tasks_path: str | None = None,
        docker_image: str = "python:3.11-slim",
        docker_kwargs: Mapping[str, Any] | None = None,
        disk_mb: int = 64,
        tmp_mb: int = 64,
        max_file_bytes_per_episode: int = 4_000_000,
        **kw: Any,
    ):
        super().__init__(max_turns=max_turns, invalid_penalty=invalid_penalty, split=split, **kw)
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if otc not in (None, "ppo"):
            raise ValueError(f"otc must be None or 'ppo' (OTC-GRPO is a batch transform), got {otc!r}")
        unknown = [t for t in tools if t not in TOOL_GROUPS]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; built-in tool groups: {sorted(TOOL_GROUPS)}")
        self.task_types = tuple(task_types)
        self.difficulty = difficulty
        self.tools = tuple(tools)
        self.reward_kind, self.tool_cost, self.otc, self.otc_c = reward, float(tool_cost), otc, float(otc_c)
        self.max_output_chars, self.max_calls_per_turn = int(max_output_chars), int(max_calls_per_turn)
        self.timeout_s, self.memory_mb = float(timeout_s), int(memory_mb)
        self.disk_mb, self.tmp_mb = int(disk_mb), int(tmp_mb)
        if int(max_file_bytes_per_episode) < 0:
            raise ValueError(f"max_file_bytes_per_episode must be >= 0, got {max_file_bytes_per_episode!r}")
        self.max_file_bytes_per_episode = int(max_file_bytes_per_episode)
        self._file_tasks = self._load_tasks(tasks_path) if tasks_path else None
        if self._file_tasks is None:
            for t in self.task_types:
                if t not in tasks.TASK_TYPES:
                    raise ValueError(f"unknown task type {t!r}; choose from {tasks.TASK_TYPES} or pass tasks_path=")
                missing = tasks.needed_tools(t, self.tools)
                if missing:
                    raise ValueError(f"task type {t!r} needs the {missing} tool(s); add them to tools= or drop the type")
        self.declarations: dict[str, dict[str, Any]] = {}
        for group in self.tools:
            for name in TOOL_GROUPS[group]:
                self.declarations[name] = BUILTIN_DECLARATIONS[name]
        self.sandbox: Any = None
        if "python" in self.tools:
            limits = SandboxLimits(timeout_s=self.timeout_s, memory_mb=self.memory_mb, disk_mb=self.disk_mb,
                                   tmp_mb=self.tmp_mb)
            self.sandbox = make_sandbox(sandbox, limits, docker_image=docker_image, docker_kwargs=docker_kwargs)
        self.mcp: Any = None
        if mcp_servers:
            from creditgym.envs.tools.mcp_client import MCPClient

            self.mcp = MCPClient(mcp_servers, timeout_s=self.timeout_s)
            self.declarations.update(self.mcp.declarations())
        self._files: dict[str, str] = {}
        self._kv: dict[str, str] = {}
        self._seen: list[str] = []
        self._calls: list[list[dict[str, Any]]] = []
        self._counts: dict[str, float] = {}
        self._answer: str | None = None
        self._synced_bytes = 0

    # ------------------------------------------------------------------ tasks
    def _load_tasks(self, path: str) -> dict[str, list[dict[str, Any]]]:
        by_split: dict[str, list[dict[str, Any]]] = {"train": [], "test": [], "heldout": []}
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row.get("task"), str) or "gold" not in row:
                    raise ValueError(f"{path}:{i}: each line needs 'task' (str) and 'gold' (str or list)")
                key = "file-" + hashlib.sha1(row["task"].encode()).hexdigest()[:12]
                by_split[split_of_key(key)].append({**row, "key": key})
        return by_split

    def _file_task(self, row: Mapping[str, Any], split: str) -> Task:
        gold = row["gold"] if isinstance(row["gold"], list) else [row["gold"]]
        check = row.get("check", "em")
        return Task(f"tools/{split}/{row['key']}", split, row["task"], tuple(str(g) for g in gold), 1,
                    {"type": "file", "kind": "file", "check": check, "params": {}, "files": {}, "kv": {}})

    def _new_task(self, rng: np.random.Generator, options: Mapping[str, Any]) -> Task:
        tid = options.get("task_id")
        if self._file_tasks is not None:
            if tid is not None:
                split, key = str(tid).split("/")[1:3]
                for row in self._file_tasks.get(split, []):
                    if row["key"] == key:
                        return self._file_task(row, split)
                raise ValueError(f"task id {tid!r} is not in tasks_path")
            rows = self._file_tasks[self.split]
            if not rows:
                raise ValueError(f"tasks_path has no tasks in split {self.split!r}")
            return self._file_task(rows[int(rng.integers(len(rows)))], self.split)
        if tid is not None:
            return tasks.build_task(str(tid))
        return tasks.generate_task(rng, self.split, self.task_types, self.difficulty)

    def _begin_episode(self, task: Task, seed: int | None, options: Mapping[str, Any]) -> None:
        super()._begin_episode(task, seed, options)
        self._files = dict(task.private.get("files", {}))
        self._kv = dict(task.private.get("kv", {}))
        self._seen, self._calls, self._answer = [], [], None
        self._synced_bytes = 0
        self._counts = {"n_calls": 0, "n_tool_errors": 0, "n_invalid": 0, "answer": 0.0, "tool_cost": 0.0,
                        "invalid": 0.0, "correct": 0.0, "otc_tool": 1.0}

    def _first_obs(self) -> str:
        assert self.task is not None
        listing = "\n".join(json.dumps(d, ensure_ascii=False) for d in self.declarations.values())
        return PROMPT.format(tools=listing, max_turns=self.max_turns, task=self.task.prompt)

    # ------------------------------------------------------------------ actions
    def _parse(self, action: str) -> Parsed | Invalid:
        reply = parse_reply(action, self.declarations, self.max_calls_per_turn)
        if isinstance(reply, str):
            return Invalid(reply)
        return Parsed("answer" if reply.answer is not None else "calls", {"reply": reply}, action)

    def _run(self, call: ToolCall) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Run one call; (content, sandbox info or None)."""
        if call.name == "python":
            return self._run_python(str(call.arguments["code"])), self.sandbox.info()
        if self.mcp is not None and "__" in call.name:
            req = {"tool": call.name, "arguments": dict(call.arguments)}
            return self.call_backend("mcp", req, lambda: self.mcp.call(call.name, call.arguments)), None
        return run_builtin(call.name, call.arguments, self._files, self._kv, self.max_output_chars), None

    def _run_python(self, code: str) -> dict[str, Any]:
        def live() -> dict[str, Any]:
            res = self.sandbox.run(code, self._files)
            return self._python_record(res.to_json())

        # Through the response log (code may read clocks or randomness), so replay is exact. The log
        # keeps only what the observation and the file store need: the cut result and a file delta
        # bounded by the episode's file budget (docs/sandbox.md, "What the response log keeps").
        out = self.call_backend("python", {"code": code, "files": _sha(self._files, 16)}, live)
        self._apply_delta(out["delta"])
        result = dict(out["result"])
        if out["error"] is None:
            return ok("python", result)
        return {**error("python", out["error"]), "result": result}

    def _python_record(self, run: Mapping[str, Any]) -> dict[str, Any]:
        """The bounded, JSON-able record of one run: the result the observation shows, the error
        message (None when it succeeded) and the change to the file store."""
        stdout = run["stdout"]
        if len(stdout) > self.max_output_chars:
            stdout = stdout[: self.max_output_chars] + f"…[cut {len(stdout) - self.max_output_chars} chars]"
        result: dict[str, Any] = {"stdout": stdout, "stderr": run["stderr"][-min(1000, self.max_output_chars):],
                                  "exit_code": run["exit_code"], "timed_out": run["timed_out"]}
        if run["output_truncated"]:
            result["output_truncated"] = True
        delta, not_kept = self._files_delta(run.get("files"))
        if not_kept:
            result["files_not_kept"] = not_kept
        failed = run["exit_code"] != 0 or run["timed_out"] or run["stopped"]
        return {"result": result, "error": self._python_error(run) if failed else None, "delta": delta}

    def _files_delta(self, new: Mapping[str, str] | None) -> tuple[dict[str, Any], list[str]]:
        """What a run changed in the file store, within the episode's byte budget: ({"set": {...},
        "del": [...]}, the changed files not kept because the budget is spent). None = no change."""
        if new is None:
            return {"set": {}, "del": []}, []
        left = self.max_file_bytes_per_episode - self._synced_bytes
        kept: dict[str, str] = {}
        not_kept: list[str] = []
        for name in sorted(new):
            if self._files.get(name) == new[name]:
                continue
            size = len(new[name].encode("utf-8"))
            if size > left:
                not_kept.append(name)
                continue
            kept[name] = new[name]
            left -= size
        return {"set": kept, "del": sorted(n for n in self._files if n not in new)}, not_kept

    def _apply_delta(self, delta: Mapping[str, Any]) -> None:
        for name in delta["del"]:
            self._files.pop(name, None)
        for name, text in delta["set"].items():
            self._files[name] = text
            self._synced_bytes += len(text.encode("utf-8"))

    def _python_error(self, run: Mapping[str, Any]) -> str:
        if run["stopped"] in ("timeout", "cpu_limit"):
            return f"time limit: the run was stopped after {self.timeout_s:g} s"
        if run["stopped"] == "output_limit":
            return "output limit: the run printed more than 1 MB and was stopped"
        if run["stopped"] == "disk_limit":
            return f"disk limit: the work dir grew past {self.disk_mb} MB; the run was stopped and its files dropped"
        err = run["stderr"]
        if "No space left on device" in err:
            return f"disk limit: the work dir ({self.disk_mb} MB) or /tmp ({self.tmp_mb} MB) is full"
        if "MemoryError" in err:
            return f"memory limit: the run needed more than {self.memory_mb} MB"
        if "Resource temporarily unavailable" in err or "sandbox: os.fork" in err:
            return "process limit: the run tried to start too many processes"
        if "File too large" in err:
            return "file size limit: a file grew past 10 MB"
        last = err.strip().splitlines()[-1] if err.strip() else ""
        if len(last) > 300:
            last = last[:300] + "…"
        return f"exit code {run['exit_code']}" + (f": {last}" if last else "")

    def _apply(self, parsed: Parsed) -> Outcome:
        reply: ParsedReply = parsed.args["reply"]
        if reply.answer is not None:
            self._answer = reply.answer
            return Outcome("", reward=self._answer_reward(reply.answer), terminated=True)
        contents: list[str] = []
        info: dict[str, Any] = {}
        self._calls.append([{"name": c.name, "arguments": dict(c.arguments)} for c in reply.calls])
        for call in reply.calls:
            content, sbx = self._run(call)
            if sbx is not None:
                info["sandbox"] = sbx
            text = json.dumps(content, ensure_ascii=False)
            contents.append(text)
            self._seen.append(call.canonical() + "=>" + text)
            self._counts["n_calls"] += 1
            self._counts["n_tool_errors"] += 0 if content.get("ok") else 1
        cost = -self.tool_cost * len(reply.calls) if self.tool_cost else 0.0
        self._counts["tool_cost"] += cost
        obs = "\n".join(f"<tool_response>\n{c}\n</tool_response>" for c in contents)
        info["tool_results"] = contents
        return Outcome(obs, reward=cost, info=info)

    # ------------------------------------------------------------------ rewards
    def _answer_reward(self, answer: str | None) -> float:
        assert self.task is not None
        correct = answer is not None and rewards.check_answer(answer, self.task.gold, self.task.private["check"])
        self._counts["correct"] = float(correct)
        if self.reward_kind == "binary":
            r = float(correct)
        elif self.reward_kind == "retool":
            r = 1.0 if correct else -1.0
        else:
            fmt = float(answer is not None and self._counts["n_invalid"] == 0)
            p = self.task.private
            plan = (tasks.first_calls(p["type"], p["kind"], p["params"], self.tools) if p["type"] != "file" else [])
            r = fmt + rewards.toolrl_correct(self._calls[0] if self._calls else [], plan)
        if self.otc == "ppo":
            tool = rewards.otc_ppo_tool(int(self._counts["n_calls"]), self.otc_c)
            self._counts["otc_tool"] = tool
            r = r * tool if r > 0 else r
        self._counts["answer"] = r
        return r

    def _finish_step(self, action: str, outcome: Outcome, *, invalid: bool = False, sanitized: bool = False,
                     **kw: Any) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if invalid:
            self._counts["n_invalid"] += 1
            self._counts["invalid"] += float(outcome.reward)
        return super()._finish_step(action, outcome, invalid=invalid, sanitized=sanitized, **kw)

    def _truncation_reward(self) -> float:
        """Truncation without an answer still pays the answer term (0, or -1 under ReTool)."""
        return self._answer_reward(None)

    def _final_components(self) -> dict[str, float]:
        c = self._counts
        return {"answer": c["answer"], "tool_cost": c["tool_cost"], "invalid": c["invalid"],
                "correct": c["correct"], "format": float(self._answer is not None and c["n_invalid"] == 0),
                "n_calls": c["n_calls"], "n_tool_errors": c["n_tool_errors"], "n_invalid": c["n_invalid"],
                "otc_tool": c["otc_tool"], "success": c["correct"]}

    def _state_key(self) -> str:
        assert self.task is not None
        return (f"tools|{self.task.task_id}|t={self.turn}|fs={_sha(self._files, 8)}|kv={_sha(self._kv, 8)}"
                f"|seen={_sha(sorted(self._seen), 12)}")

    def _abstract_state(self) -> str:
        """Progress, not text (`pvd`, docs/credit.md): distinct successful tool calls so far (capped at
        4), whether a tool result already holds a gold answer, and the turns left."""
        assert self.task is not None
        ok = {s for s in self._seen if '"ok": true' in s.split("=>", 1)[-1]}
        hit = any(rewards.check_answer(s.split("=>", 1)[-1], self.task.gold, "contains") for s in self._seen)
        return f"tools|ok={min(len(ok), 4)}|hit={int(hit)}|left={self.max_turns - self.turn}"

    # ------------------------------------------------------------------ checker hooks
    def _valid_actions(self) -> list[str]:
        def call(name: str, args: dict[str, Any]) -> str:
            return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"

        acts = ["<answer>0</answer>", "<think>guess</think><answer>42</answer>"]
        if "calculator" in self.tools:
            acts += [call("calculator", {"expression": "2 + 3 * 4"}), call("calculator", {"expression": "1 / 0"})]
        if "files" in self.tools:
            acts += [call("list_files", {}), call("read_file", {"path": "notes.txt", "limit": 50}),
                     call("write_file", {"path": "scratch.txt", "content": "hello"})]
        if "kv" in self.tools:
            acts += [call("kv_list", {"prefix": "SKU-1"}), call("kv_set", {"key": "note", "value": "x"})]
        if "python" in self.tools:
            acts += [call("python", {"code": "import os\nprint(sorted(os.listdir('.')))"})]
        return acts

    def _fuzz_actions(self) -> list[str]:
        return [
            "<tool_call></tool_call>",
            "<tool_call>{\"name\": \"calculator\"}</tool_call>",
            "<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expr\": \"1\"}}</tool_call>",
            "<tool_call>{\"name\": \"nope\", \"arguments\": {}}</tool_call>",
            "<tool_call>{\"name\": \"calculator\", \"arguments\": \"{\\\"expression\\\": \\\"1+1\\\"}\"}</tool_call>",
            "<tool_call>{\"name\": 3}</tool_call>",
            "<tool_call>{'name': 'calculator'}</tool_call>",
            "<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"1+1\"}}",
            "<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"2\"}}</tool_call><answer>2</answer>",
            "<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"9**9**9\"}}</tool_call>",
            "<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"__import__('os')\"}}</tool_call>",
            "<tool_call>{\"name\": \"read_file\", \"arguments\": {\"path\": \"../../etc/passwd\"}}</tool_call>",
            "<tool_call>{\"name\": \"write_file\", \"arguments\": {\"path\": \"/etc/x\", \"content\": \"\"}}</tool_call>",
            "".join("<tool_call>{\"name\": \"kv_list\", \"arguments\": {}}</tool_call>" for _ in range(9)),
            "<answer>",
            "<answer></answer>",
        ]

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
        if self.mcp is not None:
            self.mcp.close()
            self.mcp = None
        super().close()
