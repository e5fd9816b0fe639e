"""Run curves as inline SVG: the trainer's `metrics.jsonl` (one JSON object per step, written by the
trainers' run logger) and the advantage statistics per turn index of the report's episodes."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from html import escape
from pathlib import Path

__all__ = ["CURVE_GROUPS", "curves_html", "read_metrics", "svg_chart"]

RUN_METRICS = "metrics.jsonl"
# chart title -> metric key patterns (fnmatch; "*/" also takes a self-play role's own keys)
CURVE_GROUPS: dict[str, tuple[str, ...]] = {
    "reward": ("reward",),
    "success": ("success",),
    "advantages": ("adv/mean", "adv/std", "adv/abs_max", "adv/frac_zero_turns"),
    "advantage mean by turn index": ("adv/turn*/mean",),
    "KL to the reference": ("kl_ref", "*/kl_ref"),
    "entropy": ("entropy", "*/entropy"),
    "clip fraction": ("*clipfrac*",),
    "seconds per stage": ("time/*",),
}
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a run directory's `metrics.jsonl` (or that file); [] when there is none."""
    p = Path(path)
    p = p / RUN_METRICS if p.is_dir() else p
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a torn last line of a killed run
            continue
        if isinstance(row, dict):
            rows.append({k: float(v) for k, v in row.items() if isinstance(v, (int, float))})
    return rows


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def svg_chart(title: str, xs: Sequence[float], series: Mapping[str, Sequence[float]], width: int = 320,
              height: int = 170, xlabel: str = "step") -> str:  # fmt: skip
    """A small line chart (one polyline per series, NaN gaps skipped) with axes labels and a legend."""
    pad_l, pad_r, pad_t, pad_b = 44, 8, 20, 30
    pts = [(x, y) for ys in series.values() for x, y in zip(xs, ys) if math.isfinite(y)]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * w

    def sy(y: float) -> float:
        return pad_t + (1 - (y - y0) / (y1 - y0)) * h

    parts = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f'<text x="{pad_l}" y="13" class="ct">{escape(title)}</text>',
        f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>',
        f'<text x="{pad_l - 3}" y="{pad_t + 4}" class="ax" text-anchor="end">{_fmt(y1)}</text>',
        f'<text x="{pad_l - 3}" y="{pad_t + h}" class="ax" text-anchor="end">{_fmt(y0)}</text>',
        f'<text x="{pad_l}" y="{height - 14}" class="ax">{_fmt(x0)}</text>',
        f'<text x="{pad_l + w}" y="{height - 14}" class="ax" text-anchor="end">{_fmt(x1)}</text>',
        f'<text x="{pad_l + w / 2}" y="{height - 14}" class="ax" text-anchor="middle">{escape(xlabel)}</text>',
    ]
    for i, (name, ys) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys) if math.isfinite(y))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{line}"/>')
        parts.append(f'<text x="{pad_l + 4}" y="{pad_t + 10 + 10 * i}" class="lg" fill="{colour}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _keys(rows: Sequence[Mapping[str, float]], patterns: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for k in row:
            if any(fnmatchcase(k, p) for p in patterns):
                seen[k] = None
    return sorted(seen)


def curves_html(rows: Sequence[Mapping[str, float]], turn_stats: Mapping[str, Sequence[float]] | None = None) -> str:
    """The charts of `CURVE_GROUPS` present in `rows`, then the advantage statistics per turn index."""
    charts = []
    xs = [row.get("step", float(i + 1)) for i, row in enumerate(rows)]
    for title, patterns in CURVE_GROUPS.items():
        keys = _keys(rows, patterns)
        if keys:
            series = {k: [row.get(k, math.nan) for row in rows] for k in keys}
            charts.append(svg_chart(title, xs, series))
    if turn_stats and turn_stats.get("turn"):
        stats = {k: turn_stats[k] for k in ("mean", "std", "zero_frac")}
        charts.append(svg_chart("advantage per turn index", turn_stats["turn"], stats, xlabel="turn index"))
    return "".join(c for c in charts if c)
