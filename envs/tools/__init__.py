"""Tools: tool calling with JSON-schema tools, a sandboxed Python executor and MCP (ENVS.md section 3).

`TOOLS` = `ToolsEnv()`; `TOOLS_PYTHON` = ReTool-style arith and table tasks with the sandboxed Python
executor (registered below).
"""

from creditgym.envs.tools.calculator import CalculatorError, calculate
from creditgym.envs.tools.env import ToolsEnv
from creditgym.envs.tools.escape import EscapeResult, escape_matrix, run_escape
from creditgym.envs.tools.expert import parse_task, tools_expert, tools_random
from creditgym.envs.tools.rewards import check_answer, otc_ppo_tool, toolrl_correct
from creditgym.envs.tools.sandbox import (
    BwrapSandbox,
    RunResult,
    SandboxLimits,
    SubprocessSandbox,
    bwrap_available,
    make_sandbox,
)
from creditgym.envs.tools.schema import BUILTIN_DECLARATIONS, ParsedReply, ToolCall, parse_reply
from creditgym.envs.tools.tasks import build_task, first_calls, generate_task, solution_code
from creditgym.registry import register

__all__ = [
    "DIFFICULTIES",
    "TOOLS",
    "TOOLS_PYTHON",
    "parse_task",
    "tools_expert",
    "tools_random",
    "BUILTIN_DECLARATIONS",
    "BwrapSandbox",
    "CalculatorError",
    "EscapeResult",
    "ParsedReply",
    "RunResult",
    "SandboxLimits",
    "SubprocessSandbox",
    "ToolCall",
    "ToolsEnv",
    "build_task",
    "bwrap_available",
    "calculate",
    "check_answer",
    "escape_matrix",
    "first_calls",
    "generate_task",
    "make_sandbox",
    "otc_ppo_tool",
    "parse_reply",
    "run_escape",
    "solution_code",
    "toolrl_correct",
]

TOOLS = "creditgym/Tools-v0"
TOOLS_PYTHON = "creditgym/ToolsPython-v0"
# label -> env kwargs (ENVS.md "Difficulty"; `creditgym eval --difficulties`)
DIFFICULTIES = {"easy": {"difficulty": 1}, "medium": {"difficulty": 2}, "hard": {"difficulty": 3}}

register(TOOLS, "creditgym.envs.tools:ToolsEnv", description="tool calling with JSON-schema tools",
         expert=tools_expert, random=tools_random, difficulties=DIFFICULTIES)
register(TOOLS_PYTHON, "creditgym.envs.tools:ToolsEnv", {"task_types": ("arith", "table"), "tools": ("python",), "reward": "retool"},
         "ReTool-style tasks solved with a sandboxed Python executor",
         expert=tools_expert, random=tools_random, difficulties=DIFFICULTIES)
