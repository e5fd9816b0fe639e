"""`creditgym quickstart --out DIR`: the offline quickstart (ARCHITECTURE.md "Entry points")."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from creditgym.trainers.quickstart import QuickstartConfig, run_quickstart
from creditgym.viewer import write_report

app = typer.Typer()


@app.command()
def quickstart(
    out: Path = typer.Option(Path("quickstart_out"), "--out", help="output folder"),
    seed: int = typer.Option(0, help="seed of the model, data and RL"),
    threads: int = typer.Option(2, help="torch CPU threads"),
    rl_steps: int = typer.Option(None, help="override the RL budget (rounds)"),
    progress: bool = typer.Option(True, help="show progress bars"),
    report: bool = typer.Option(True, help="write DIR/report.html, the run's per-token credit report (creditgym view)"),
) -> None:
    """SFT warm start, then RL with a turn-level estimator on one-hop search QA, fully offline:
    prints held-out success before and after RL and writes DIR/summary.json (and DIR/report.html)."""
    cfg = QuickstartConfig(seed=seed, threads=threads, progress=progress)
    if rl_steps is not None:
        cfg.rl_steps = rl_steps
    s = run_quickstart(out, cfg)
    table = Table(title=f"creditgym quickstart — {cfg.env_id}, {s['split']} split, n={s['n_eval']}")
    for col in ("stage", "test success", "test reward"):
        table.add_column(col)
    table.add_row("after SFT warm start (before RL)", f"{s['before']['success']:.3f}", f"{s['before']['reward']:.3f}")
    table.add_row(f"after RL ({cfg.estimator})", f"{s['after']['success']:.3f}", f"{s['after']['reward']:.3f}")
    Console().print(table)
    if report:
        write_report(out, out / "report.html", estimator=cfg.estimator, cfg=cfg.estimator_cfg or {})
    typer.echo(f"{s['seconds']:.0f} s; wrote {out / 'summary.json'}, episodes.jsonl, reward_curve.png, report.html and the "
               f"models {s['sft_model']}, {s['final_model']} (evaluate: creditgym eval {cfg.env_id} --model "
               f"{s['final_model']})")  # fmt: skip
