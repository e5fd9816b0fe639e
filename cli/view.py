"""`creditgym view RUN_DIR_OR_JSONL -o report.html [--estimator NAME] [--compare EST2]` (docs/viewer.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from creditgym.cli.recredit import knobs
from creditgym.viewer import write_report

app = typer.Typer()


@app.command()
def view(
    source: Path = typer.Argument(..., help="a run directory or a RolloutStore .jsonl file"),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="the HTML report to write"),
    estimator: str = typer.Option(None, "--estimator", "-e", help="colour by this estimator (default: the attached credit, else grpo)"),
    cfg: list[str] = typer.Option(None, "--cfg", help="a knob of --estimator as KEY=VALUE; repeat it"),
    compare: str = typer.Option(None, "--compare", help="a second estimator shown beside the first; sign disagreements marked"),
    compare_cfg: list[str] = typer.Option(None, "--compare-cfg", help="a knob of --compare as KEY=VALUE; repeat it"),
    tokenizer: str = typer.Option(None, help="HF tokenizer folder or name for the token ids (default: the run's saved model, else bytes)"),
    max_obs_chars: int = typer.Option(4000, help="cut observations longer than this in the report"),
) -> None:
    """Write the per-token credit report of a run directory or rollouts file as one self-contained HTML file."""
    tok = None
    if tokenizer:
        from transformers import AutoTokenizer  # heavy: only when asked for

        tok = AutoTokenizer.from_pretrained(tokenizer)
    try:
        path = write_report(source, out, estimator=estimator, cfg=knobs(cfg), compare=compare,
                            compare_cfg=knobs(compare_cfg), tokenizer=tok, max_obs_chars=max_obs_chars)  # fmt: skip
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
        typer.echo(f"view: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
