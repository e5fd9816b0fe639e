"""`creditgym check ENV_ID` (or `FILE.py:ID`, `module:ID`): creditgym.check_env as a report."""

from __future__ import annotations

import typer

from creditgym.checker import check_env
from creditgym.cli.options import env_source

app = typer.Typer()


@app.command()
def check(
    env: str = typer.Argument(..., help="ENV_ID, path/to/file.py:ENV_ID or module:ENV_ID", callback=env_source),
    seeds: int = typer.Option(5, help="number of seeds the checks run over"),
    fuzz: int = typer.Option(64, help="number of fuzz actions"),
) -> None:
    """Run creditgym.check_env (gymnasium's checker plus the text-env checks) and print a report."""
    try:
        report = check_env(env, n_seeds=seeds, n_fuzz=fuzz, strict=False)
    except Exception as e:  # an env that cannot even be built: report it, exit non-zero
        typer.echo(f"check_env({env}): could not build the env: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(str(report))
    raise typer.Exit(0 if report.ok else 1)
