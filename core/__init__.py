"""creditgym: multi-turn text environments, pluggable credit assignment, RL trainers for LLM agents.

`import creditgym` registers every built-in env id with gymnasium (string entry points: no env family
is imported until `gymnasium.make` asks for it). `creditgym.view(episodes)` is the credit viewer's
notebook entry point (`creditgym.viewer.view`), resolved on first use so that importing core never
loads the viewer, a top layer.
"""

from typing import Any

from creditgym.batch import CreditBatch
from creditgym.checker import CheckReport, CheckResult, check_env
from creditgym.registry import register, register_builtin_envs
from creditgym.trajectory import Episode, TaskSpec, Turn

__version__ = "0.1.0"

__all__ = [
    "CheckReport",
    "CheckResult",
    "CreditBatch",
    "Episode",
    "TaskSpec",
    "Turn",
    "__version__",
    "check_env",
    "register",
]

register_builtin_envs()


def __getattr__(name: str) -> Any:
    if name == "view":  # the one upward reference, resolved lazily (tests/core/test_layers.py exempts it)
        from creditgym.viewer import view

        return view
    raise AttributeError(f"module 'creditgym' has no attribute {name!r}")
