"""The `creditgym` command line (Typer).

This module is the top layer although it lives in core: every command imports what it needs inside
its function, and `creditgym/__init__` never imports this module. Other layers add commands by
registering a Typer app or function in `COMMAND_MODULES` / `BENCH_MODULES` below, which are imported
lazily, so `creditgym --help` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    name="creditgym",
    help="Multi-turn text envs, pluggable credit assignment and RL trainers for LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_IMPORTED_FILES: dict[Path, Any] = {}

# bench target -> "module:function" (the function takes no arguments beyond its Typer options)
BENCH_MODULES: dict[str, str] = {
    "accuracy": "creditgym.benchmarks.accuracy:main",
    "credit": "creditgym.credit.bench:main",
    "head": "creditgym.trainers.bench_head:main",
    "reliability": "creditgym.benchmarks.reliability:main",
    "rollout": "creditgym.agents.bench:main",
    "train": "creditgym.trainers.bench:main",
}


def import_env_source(source: str) -> str:
    """Resolve `ENV_ID`, `path/to/file.py:ENV_ID` or `module:ENV_ID`: import the file or module
    (once per process, files cached by resolved path) so its `register(...)` calls run; return the id."""
    import creditgym  # noqa: F401  (registers the built-in ids)

    if ":" not in source:
        return source
    where, env_id = source.rsplit(":", 1)
    if where.endswith(".py") or "/" in where or Path(where).is_file():
        path = Path(where).resolve()
        if not path.is_file():
            raise typer.BadParameter(f"no such file: {where}")
        if path not in _IMPORTED_FILES:
            name = f"_creditgym_user_{abs(hash(str(path))) & 0xFFFFFFFF:x}_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise typer.BadParameter(f"cannot import {where} as a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            sys.path.insert(0, str(path.parent))
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(path.parent))
            _IMPORTED_FILES[path] = module
    else:
        importlib.import_module(where)
    return env_id


def json_object_option(raw: str, flag: str = "--env-kwargs", example: str = '{"topk": 1}') -> dict[str, Any]:
    """Parse a command-line option that holds a JSON object (e.g. env kwargs), with an error naming it."""
    import json

    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise typer.BadParameter(f"{flag} must be a JSON object, e.g. '{example}': {e}") from e
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{flag} must be a JSON object, got {raw!r}")
    return value


@app.command("envs")
def envs_command() -> None:
    """List the registered creditgym envs with a one-line description each."""
    import gymnasium
    from rich.console import Console
    from rich.table import Table

    import creditgym  # noqa: F401
    from creditgym.registry import describe_env, entry_point_string

    table = Table(title="creditgym envs")
    table.add_column("id")
    table.add_column("entry point")
    table.add_column("description")
    for env_id in sorted(gymnasium.registry):
        spec = gymnasium.registry[env_id]
        if env_id.startswith("creditgym/") or describe_env(env_id):
            table.add_row(env_id, entry_point_string(spec.entry_point), describe_env(env_id))
    Console().print(table)


@app.command("check")
def check_command(
    env: str = typer.Argument(..., help="ENV_ID, path/to/file.py:ENV_ID or module:ENV_ID"),
    seeds: int = typer.Option(5, help="number of seeds the checks run over"),
    fuzz: int = typer.Option(64, help="number of fuzz actions"),
) -> None:
    """Run creditgym.check_env (gymnasium's checker plus the text-env checks) and print a report."""
    from creditgym.checker import check_env

    env_id = import_env_source(env)
    try:
        report = check_env(env_id, n_seeds=seeds, n_fuzz=fuzz, strict=False)
    except Exception as e:  # an env that cannot even be built: report it, exit non-zero
        typer.echo(f"check_env({env_id}): could not build the env: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(str(report))
    raise typer.Exit(0 if report.ok else 1)


@app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench_command(
    ctx: typer.Context,
    target: str = typer.Argument(..., help=f"what to benchmark: {', '.join(BENCH_MODULES)}; options after it go to the benchmark"),
) -> None:
    """Run a side-by-side benchmark and print its table (never a timed test)."""
    args = ctx.args
    if target not in BENCH_MODULES:
        raise typer.BadParameter(f"unknown bench target {target!r}; choose one of {sorted(BENCH_MODULES)}")
    module, func = BENCH_MODULES[target].split(":")
    try:
        fn = getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as e:
        typer.echo(f"bench {target}: {module} is not available in this install ({e})", err=True)
        raise typer.Exit(2) from e
    sub = typer.Typer(add_completion=False)
    sub.command(name=target)(fn)
    sub(args=list(args or []), prog_name=f"creditgym bench {target}", standalone_mode=True)


def _register_layer_commands() -> None:
    """Commands owned by upper layers (train, eval, quickstart, recredit, view) register here."""
    for module in ("creditgym.trainers.cli",):
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            importlib.import_module(module).register(app)


_register_layer_commands()

if __name__ == "__main__":
    app()
