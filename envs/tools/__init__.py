"""Tools: tool calling with JSON-schema tools, a sandboxed Python executor and MCP (ENVS.md section 3).

`creditgym/Tools-v0` = `ToolsEnv()`; `creditgym/ToolsPython-v0` = `ToolsEnv(task_types=("arith",
"table"), tools=("python",), reward="retool")` (ReTool-style).
"""

from creditgym.envs.tools.calculator import CalculatorError, calculate
from creditgym.envs.tools.env import ToolsEnv
from creditgym.envs.tools.escape import EscapeResult, escape_matrix, run_escape
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

__all__ = [
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
