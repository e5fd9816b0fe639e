"""The `creditgym` command line (Typer): the top layer, which may import every part of creditgym and
which nothing imports (ARCHITECTURE.md "Layers").

Each command is one module here, `cli/<name>.py`, holding a one-command Typer `app`; `COMMANDS` maps
the command name to its one-line help. The top-level app imports a command's module only when that
command runs (or shows its own help), so `creditgym --help` stays fast although the command modules
import the trainers, the models and the benchmarks at their top.

Add a command: write `cli/<name>.py` with `app = typer.Typer()` and one `@app.command()` function (its
docstring is the command's help; see `cli/envs.py`), then add the line `"<name>": "<one-line help>",`
to `COMMANDS`.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

COMMANDS: dict[str, str] = {
    "envs": "List the registered creditgym envs with a one-line description each.",
    "check": "Run creditgym.check_env (gymnasium's checker plus the text-env checks) and print a report.",
    "bench": "Run a side-by-side benchmark and print its table (never a timed test).",
    "quickstart": "SFT warm start, then RL with a turn-level estimator on one-hop search QA, fully offline: "
    "prints held-out success before and after RL and writes DIR/summary.json.",
    "train": "Train a policy: flags after the options are the Config dataclass fields (see --list-flags).",
    "eval": "Success and reward per difficulty on test-split seeds, as a table.",
    "recredit": "Run an estimator on saved rollouts (no model) and write them with per-turn and per-token advantages.",
    "view": "Write the per-token credit report of a run directory or rollouts file as one self-contained HTML file.",
    "serve": "Serve a checkpoint over the OpenAI API with exact token ids, logprobs and vLLM's weight-sync endpoints.",
    "gateway": "Proxy an outside agent's OpenAI calls to a server and record each session as a creditgym Episode.",
}


class LazyCommands(TyperGroup):
    """Lists `COMMANDS` with their help lines; imports a command's module when it is invoked."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> TyperCommand | None:  # a stub: name and help line
        return TyperCommand(cmd_name, help=COMMANDS[cmd_name]) if cmd_name in COMMANDS else None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, _, rest = super().resolve_command(ctx, args)
        return name, typer.main.get_command(importlib.import_module(f"creditgym.cli.{name}").app), rest


app = typer.Typer(
    name="creditgym",
    cls=LazyCommands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Multi-turn text envs, pluggable credit assignment and RL trainers for LLM agents."""

