"""`creditgym recredit ROLLOUTS.jsonl|RUN_DIR --estimator NAME [--cfg k=v ...] -o OUT.jsonl` (docs/viewer.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from creditgym.store import RolloutStore
from creditgym.viewer import read_episodes
from creditgym.viewer import recredit as recredit_episodes

app = typer.Typer()


def knobs(pairs: list[str] | None) -> dict[str, Any] | None:
    """`["gamma=0.95", "norm=std"]` -> `{"gamma": 0.95, "norm": "std"}` (a value is JSON, else text); None for none."""
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--cfg takes KEY=VALUE, e.g. --cfg gamma=0.95; got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


@app.command()
def recredit(
    source: Path = typer.Argument(..., help="a RolloutStore .jsonl file or a run directory (its episodes.jsonl)"),
    estimator: str = typer.Option(..., "--estimator", "-e", help="registered name, FILE.py:NAME or module:NAME"),
    cfg: list[str] = typer.Option(None, "--cfg", help="an estimator knob as KEY=VALUE (JSON or text); repeat it"),
    out: Path = typer.Option(..., "--out", "-o", help="the credited episodes (a RolloutStore .jsonl; replaced)"),
) -> None:
    """Run an estimator on saved rollouts (no model) and write them with per-turn and per-token advantages."""
    try:
        episodes = recredit_episodes(read_episodes(source), estimator, **(knobs(cfg) or {}))
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
        typer.echo(f"recredit: {e}", err=True)
        raise typer.Exit(2) from e
    out.unlink(missing_ok=True)
    RolloutStore(out).extend(episodes)
    typer.echo(f"wrote {len(episodes)} episodes with {estimator} credit to {out}")
