"""`creditgym envs`: the registered creditgym envs, one line each."""

from __future__ import annotations

import gymnasium
import typer
from rich.console import Console
from rich.table import Table

from creditgym.registry import describe_env, entry_point_string

app = typer.Typer()


@app.command()
def envs() -> None:
    """List the registered creditgym envs with a one-line description each."""
    table = Table(title="creditgym envs")
    table.add_column("id")
    table.add_column("entry point")
    table.add_column("description")
    for env_id in sorted(gymnasium.registry):
        spec = gymnasium.registry[env_id]
        if env_id.startswith("creditgym/") or describe_env(env_id):
            table.add_row(env_id, entry_point_string(spec.entry_point), describe_env(env_id))
    Console().print(table)
