"""The cost-accuracy frontier (`creditgym bench frontier`): Pareto front by hand, its properties,
and the command on a small report."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from creditgym.benchmarks.frontier import Point, frontier_table, pareto_front, points_of


def test_pareto_front_by_hand():
    pts = [Point("grpo", 1.0, 0.29), Point("rebn", 1.0, 0.34), Point("pvd", 1.0, 0.68), Point("tree", 3.8, 0.20),
           Point("spo", 35.6, 0.39), Point("vineppo", 78.8, 0.72), Point("nan", 2.0, float("nan"))]  # fmt: skip
    assert [p.name for p in pareto_front(pts)] == ["pvd", "vineppo"]
    # equal points: the first by name stays, the other is dominated by nothing but does not add accuracy
    assert [p.name for p in pareto_front([Point("b", 1, 0.5), Point("a", 1, 0.5)])] == ["a"]
    assert pareto_front([]) == []


def _dominates(p: Point, q: Point) -> bool:
    return p.cost <= q.cost and p.accuracy >= q.accuracy and (p.cost < q.cost or p.accuracy > q.accuracy)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1.0, 1.125, 3.0, 13.7, 29.6]), st.floats(-1, 1)), min_size=1, max_size=12))
def test_front_is_undominated_and_covers_the_rest(raw):
    pts = [Point(f"e{i}", c, a) for i, (c, a) in enumerate(raw)]
    front = pareto_front(pts)
    assert [p.cost for p in front] == sorted(p.cost for p in front)
    assert all(not _dominates(q, p) for p in front for q in pts)
    for q in pts:
        assert q in front or any(_dominates(p, q) or (p.cost, p.accuracy) == (q.cost, q.accuracy) for p in front)


def _report(env: str, ceiling: float) -> dict:
    rows = [{"name": "grpo", "spearman": 0.3, "episodes_per_base": 1.0},
            {"name": "pvd", "spearman": 0.7, "episodes_per_base": 1.0},
            {"name": "spo", "spearman": 0.72, "episodes_per_base": 13.0},
            {"name": "igpo", "skipped": "needs a model policy"}]  # fmt: skip
    return {"env_id": env, "config": {"env_kwargs": {"difficulty": 2}}, "truth": {"ceiling_spearman": ceiling}, "rows": rows}


def test_points_skip_unmeasured_rows_and_table_lists_the_front():
    rep = _report("creditgym/Tools-v0", 0.94)
    assert [p.name for p in points_of(rep)] == ["grpo", "pvd", "spo"]
    table = frontier_table([rep])
    assert "| creditgym/Tools-v0 (difficulty=2) | pvd | 1.00 | 0.70 | 0.94 |" in table
    assert "| spo | 13.00 | 0.72 |" in table and "grpo" not in table


def test_cli_writes_the_plot(tmp_path):
    from creditgym.cli import app

    paths = []
    for i, env in enumerate(["creditgym/Search-v0", "creditgym/Device-v0"]):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(_report(env, float("nan") if i else 0.85)))
        paths.append(str(p))
    out = tmp_path / "front.png"
    res = CliRunner().invoke(app, ["bench", "frontier", *paths, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "| creditgym/Device-v0 (difficulty=2) | pvd |" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    assert CliRunner().invoke(app, ["bench", "frontier", str(bad)]).exit_code != 0
