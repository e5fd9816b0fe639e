"""`creditgym bench TARGET [OPTIONS]`: runs a benchmark of `creditgym.benchmarks` (the top-level
`benchmarks/` folder). Each target is a module whose `main` is a Typer command function, shown as a
subcommand (`creditgym bench accuracy --help` lists its options); a target's module is imported
only when it runs or shows its help. Add a target: one line in `BENCH_TARGETS`."""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

# target -> module of creditgym.benchmarks whose `main` runs it
BENCH_TARGETS: dict[str, str] = {
    "accuracy": "accuracy",
    "async": "async_collect",
    "credit": "credit",
    "frontier": "frontier",
    "gateway": "gateway",
    "head": "head",
    "reliability": "reliability",
    "rollout": "rollout",
    "train": "train",
    "trl": "trl_overhead",
}


def target_command(target: str) -> Any:
    """The Typer command of one target (imports its benchmark module)."""
    module = f"creditgym.benchmarks.{BENCH_TARGETS[target]}"
    try:
        main = importlib.import_module(module).main
    except ModuleNotFoundError as e:
        typer.echo(f"bench {target}: {module} is not available in this install ({e})", err=True)
        raise typer.Exit(2) from e
    sub = typer.Typer(add_completion=False)
    sub.command(name=target)(main)
    return typer.main.get_command(sub)


class LazyTargets(TyperGroup):
    """Lists `BENCH_TARGETS`; imports a target's module when it is invoked."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(BENCH_TARGETS)

    def get_command(self, ctx: Any, cmd_name: str) -> TyperCommand | None:  # a stub for the listing
        return TyperCommand(cmd_name, help=f"creditgym.benchmarks.{BENCH_TARGETS[cmd_name]}") if cmd_name in BENCH_TARGETS else None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in BENCH_TARGETS:
            raise typer.BadParameter(f"unknown bench target {args[0]!r}; choose one of {sorted(BENCH_TARGETS)}", ctx)
        name, _, rest = super().resolve_command(ctx, args)
        return name, target_command(str(name)), rest


app = typer.Typer(cls=LazyTargets, no_args_is_help=True, add_completion=False)


@app.callback()
def bench() -> None:
    """Run a side-by-side benchmark and print its table (never a timed test): `creditgym bench TARGET
    [OPTIONS]`, `creditgym bench TARGET --help` for a target's options."""
