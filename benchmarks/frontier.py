"""`creditgym bench frontier REPORT.json ...`: the cost-accuracy frontier of credit estimators
(docs/accuracy.md, "The frontier"; issue 19 item 4), drawn from `creditgym bench accuracy --json`
reports.

Each report is one env's truth. An estimator is a point: x = env episodes per base episode (its
collection cost relative to GRPO's 1), y = rank correlation of its turn advantages with the truth.
An estimator is on the frontier when no other estimator of the same report is at least as cheap and
at least as accurate, and strictly better in one (`pareto_front`). The plot has one panel per report,
the frontier as a step line and the truth's noise ceiling dashed; the table lists the frontier.

    creditgym bench frontier search.json tools.json device.json --out docs/img/frontier.png
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

__all__ = ["Point", "main", "pareto_front", "plot_frontier", "points_of"]


@dataclass(frozen=True)
class Point:
    """One measured estimator: its name, cost (episodes per base episode) and rank correlation."""

    name: str
    cost: float
    accuracy: float


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point dominates (cost <= and accuracy >=, one strictly), by rising cost.
    Ties (equal cost and accuracy) keep the first by name, so the frontier is deterministic."""
    pts = sorted((p for p in points if math.isfinite(p.cost) and math.isfinite(p.accuracy)),
                 key=lambda p: (p.cost, -p.accuracy, p.name))  # fmt: skip
    front: list[Point] = []
    for p in pts:
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


def points_of(report: dict[str, Any]) -> list[Point]:
    """The measured (not skipped) rows of one accuracy report as points."""
    return [Point(r["name"], float(r["episodes_per_base"]), float(r["spearman"]))
            for r in report["rows"] if not r.get("skipped") and r.get("spearman") is not None]  # fmt: skip


def _label(report: dict[str, Any]) -> str:
    kw = report.get("config", {}).get("env_kwargs") or {}
    extra = ", ".join(f"{k}={v}" for k, v in kw.items())
    return f"{report['env_id']}" + (f" ({extra})" if extra else "")


def plot_frontier(reports: Sequence[dict[str, Any]], out: str | Path) -> Path:
    """Draw one panel per report (log-scale cost, rank correlation, frontier, noise ceiling) to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(4.6 * len(reports), 4.0), squeeze=False)
    for ax, rep in zip(axes[0], reports, strict=True):
        pts = points_of(rep)
        front = pareto_front(pts)
        on = {p.name for p in front}
        for p in pts:
            ax.scatter(p.cost, p.accuracy, s=28, color="#d62728" if p.name in on else "#7f7f7f", zorder=3)
            if p.name in on:
                ax.annotate(p.name, (p.cost, p.accuracy), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if front:
            xs = [front[0].cost] + [q.cost for q in front[1:] for _ in (0, 1)]
            ys = [q.accuracy for q in front[:-1] for _ in (0, 1)] + [front[-1].accuracy]
            ax.plot(xs, ys, color="#d62728", lw=1.2, zorder=2)
        ceiling = float(rep.get("truth", {}).get("ceiling_spearman", math.nan))
        if math.isfinite(ceiling):
            ax.axhline(ceiling, ls="--", color="k", lw=0.8)
            ax.text(1.0, ceiling, " noise ceiling", va="bottom", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("env episodes per base episode (GRPO = 1)")
        ax.set_ylabel("rank correlation with Monte-Carlo truth")
        ax.set_title(_label(rep), fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def frontier_table(reports: Sequence[dict[str, Any]]) -> str:
    """A markdown table of every report's frontier: env, estimator, cost, rank correlation, ceiling."""
    lines = ["| env | estimator on the frontier | episodes per base episode | rank corr | noise ceiling |", "|---|---|---|---|---|"]
    for rep in reports:
        ceiling = float(rep.get("truth", {}).get("ceiling_spearman", math.nan))
        for p in pareto_front(points_of(rep)):
            c = f"{ceiling:.2f}" if math.isfinite(ceiling) else "—"
            lines.append(f"| {_label(rep)} | {p.name} | {p.cost:.2f} | {p.accuracy:.2f} | {c} |")
    return "\n".join(lines)


def main(
    reports: list[Path] = typer.Argument(..., help="JSON reports of `creditgym bench accuracy --json`"),
    out: Path = typer.Option(Path("frontier.png"), help="where to write the plot (PNG)"),
) -> None:
    """Plot the cost-accuracy frontier of credit estimators from accuracy reports and print it."""
    loaded = []
    for path in reports:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise typer.BadParameter(f"{path}: not a readable JSON report ({e}); write one with "
                                     "`creditgym bench accuracy ENV --json OUT`") from e  # fmt: skip
        if not isinstance(data, dict) or "rows" not in data:
            raise typer.BadParameter(f"{path}: no 'rows'; write it with `creditgym bench accuracy ENV --json OUT`")
        loaded.append(data)
    typer.echo(frontier_table(loaded))
    typer.echo(f"plot: {plot_frontier(loaded, out)}")
