"""`creditgym bench TARGET [OPTIONS]`: runs a benchmark of `creditgym.benchmarks` (the top-level
`benchmarks/` folder). Each target is a module whose `main` is a Typer command function; the options
after the target go to it. Add a target: one line in `BENCH_TARGETS`."""

from __future__ import annotations

import importlib

import typer

# target -> module of creditgym.benchmarks whose `main` runs it (imported only when that target runs)
BENCH_TARGETS: dict[str, str] = {
    "accuracy": "accuracy",
    "credit": "credit",
    "head": "head",
    "reliability": "reliability",
    "rollout": "rollout",
    "train": "train",
    "trl": "trl_overhead",
}

app = typer.Typer()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    target: str = typer.Argument(..., help=f"what to benchmark: {', '.join(BENCH_TARGETS)}; options after it go to the benchmark"),
) -> None:
    """Run a side-by-side benchmark and print its table (never a timed test)."""
    if target not in BENCH_TARGETS:
        raise typer.BadParameter(f"unknown bench target {target!r}; choose one of {sorted(BENCH_TARGETS)}")
    module = f"creditgym.benchmarks.{BENCH_TARGETS[target]}"
    try:
        main = importlib.import_module(module).main
    except ModuleNotFoundError as e:
        typer.echo(f"bench {target}: {module} is not available in this install ({e})", err=True)
        raise typer.Exit(2) from e
    sub = typer.Typer(add_completion=False)
    sub.command(name=target)(main)
    sub(args=list(ctx.args), prog_name=f"creditgym bench {target}", standalone_mode=True)
