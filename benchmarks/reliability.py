"""`creditgym bench reliability`: the hostile-input suite of docs/reliability.md, with figures.

Areas (each a function returning `Row`s, shared with tests/benchmarks/test_reliability.py):

* `fuzz`: N fuzzed actions per registered env id (benchmarks/fuzz.py) plus `Collector.collect()` with a
  fuzzing policy per env;
* `sandbox`: the escape matrix of every sandbox level (`creditgym.envs.tools.sandbox.escape_matrix`);
* `http`: fault injection against local fake servers (`creditgym.benchmarks.reliability_http`);
* `store`: SIGKILL drills of the RolloutStore writer and of checkpoint saving (benchmarks/drills.py);
* `nonfinite`: NaN / inf rewards through every credit estimator (benchmarks/nonfinite.py).

A row's `status` is "ok", "failed", "skipped" (with the reason in `detail`) or "not available" (the
area's driver is not in this install). `tried` counts attempts, `contained` those that were contained
or survived, `failed` those that were not.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from creditgym.benchmarks.drills import checkpoint_kill_drill, store_kill_drill
from creditgym.benchmarks.fuzz import fuzz_collector, fuzz_env, registered_env_ids
from creditgym.benchmarks.nonfinite import nonfinite_episodes, run_estimator
from creditgym.credit import ESTIMATORS

__all__ = ["AREAS", "Row", "area_summary", "drill_rows", "fuzz_rows", "http_rows", "main", "nonfinite_rows", "run", "sandbox_rows"]

log = logging.getLogger(__name__)

AREAS = ("fuzz", "sandbox", "http", "store", "nonfinite")
SANDBOX_LEVELS = ("subprocess", "bwrap", "docker")
# The subprocess level is not a security boundary (docs/sandbox.md): there only the resource cases must
# hold; an isolation case it does not contain is reported as "not a boundary", not as a failure.
ISOLATING_LEVELS = frozenset({"bwrap", "docker"})
SUBPROCESS_MUST_CONTAIN = frozenset({"memory_4gb", "cpu_loop", "output_100mb", "disk_fill", "env_secrets"})
# outcome words of reliability_http rows that mean the client contained the fault
HTTP_CONTAINED = frozenset({"contained", "survived", "ok", "pass", "passed", "handled"})


@dataclass
class Row:
    area: str
    case: str
    tried: int
    contained: int
    failed: int
    status: str = "ok"
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _status(failed: int) -> str:
    return "failed" if failed else "ok"


# ---------------------------------------------------------------------- areas


def fuzz_rows(
    actions: int = 10_000,
    env_ids: Sequence[str] | None = None,
    seed: int = 0,
    hang_s: float = 5.0,
    collector_groups: int = 4,
) -> list[Row]:
    """One row per env (fuzzed steps) and one per env for `Collector.collect()` with the fuzz policy."""
    rows = []
    for env_id in env_ids or registered_env_ids():
        r = fuzz_env(env_id, actions, seed=seed, hang_s=hang_s)
        detail = "; ".join(f"{f['kind']} on {f['action'][:60]}: {f['detail'].splitlines()[0][:200]}" for f in r.failures[:3])
        rows.append(Row("fuzz", env_id, r.tried, r.tried - r.failed, r.failed, _status(r.failed), detail, r.as_dict()))
        if collector_groups > 0:
            c = fuzz_collector(env_id, num_groups=collector_groups, seed=seed)
            rows.append(Row("fuzz", f"collector {env_id}", 1, int(c["ok"]), int(not c["ok"]), _status(not c["ok"]), c["detail"][-600:], c))
    return rows


def _field(item: Any, names: Sequence[str], default: Any = None) -> Any:
    for name in names:
        if isinstance(item, dict) and name in item:
            return item[name]
        if hasattr(item, name):
            return getattr(item, name)
    return default


def sandbox_rows(levels: Sequence[str] = SANDBOX_LEVELS, matrix: Callable[[str], list[Any]] | None = None) -> list[Row]:
    """One row per (level, escape case) from the sandbox's own escape matrix (`matrix` replaces it in tests)."""
    if matrix is None:
        try:
            matrix = importlib.import_module("creditgym.envs.tools.sandbox").escape_matrix
            importlib.import_module("creditgym.envs.tools.escape")
        except (ImportError, AttributeError) as e:
            return [Row("sandbox", "escape_matrix", 0, 0, 0, "not available", f"no escape matrix in this install ({e})")]
    rows = []
    for level in levels:
        try:
            results = matrix(level)
        except Exception as e:  # a level that cannot run at all: report it, the other levels still run
            rows.append(Row("sandbox", f"{level}", 1, 0, 1, "failed", f"escape_matrix({level!r}) raised {type(e).__name__}: {e}"))
            continue
        for item in results:
            case = str(_field(item, ("case", "name", "attempt"), "?"))
            detail = str(_field(item, ("detail", "reason"), ""))[:400]
            skipped = _field(item, ("skipped",), False) or _field(item, ("contained",)) is None
            if skipped:
                rows.append(Row("sandbox", f"{level}: {case}", 0, 0, 0, "skipped", detail))
                continue
            ok = _field(item, ("contained",)) is True
            if not ok and level not in ISOLATING_LEVELS and case not in SUBPROCESS_MUST_CONTAIN:
                rows.append(Row("sandbox", f"{level}: {case}", 1, 0, 0, "not a boundary", detail))
                continue
            rows.append(Row("sandbox", f"{level}: {case}", 1, int(ok), int(not ok), _status(not ok), detail))
    return rows


def http_rows(timeout_s: float = 1.0, matrix: Callable[..., list[dict[str, Any]]] | None = None) -> list[Row]:
    """One row per (client, fault) from `reliability_http.http_fault_matrix` (`matrix` replaces it in tests)."""
    if matrix is None:
        try:
            matrix = importlib.import_module("creditgym.benchmarks.reliability_http").http_fault_matrix
        except (ImportError, AttributeError) as e:
            return [Row("http", "http_fault_matrix", 0, 0, 0, "not available", f"no HTTP fault matrix in this install ({e})")]
    rows = []
    for r in matrix(timeout_s=timeout_s):
        outcome = str(r.get("outcome", "")).lower()
        case = f"{r.get('client', '?')}: {r.get('fault', '?')}"
        detail = f"{r.get('outcome', '')} in {float(r.get('seconds', 0.0)):.2f} s; {r.get('detail', '')}"[:400]
        if outcome.startswith("skip"):
            rows.append(Row("http", case, 0, 0, 0, "skipped", detail, dict(r)))
            continue
        ok = outcome in HTTP_CONTAINED
        rows.append(Row("http", case, 1, int(ok), int(not ok), _status(not ok), detail, dict(r)))
    return rows


def drill_rows(kills: int = 50, checkpoint_kills: int | None = None, seed: int = 0) -> list[Row]:
    """The store and checkpoint SIGKILL drills (`checkpoint_kills` defaults to `kills`)."""
    rows = []
    for d in (store_kill_drill(kills, seed=seed), checkpoint_kill_drill(kills if checkpoint_kills is None else checkpoint_kills, seed=seed)):
        note = f"{d.acknowledged} acknowledged, {d.recovered} recovered, {d.torn_lines} torn lines skipped"
        detail = "; ".join([note, *d.failures[:3]])
        rows.append(Row("store", f"{d.name} kill drill", d.tried, d.tried - d.failed, d.failed, _status(d.failed), detail, d.as_dict()))
    return rows


def nonfinite_rows() -> list[Row]:
    """One row per registered estimator: contained after the trainer's group drop; `detail` says what
    happens without the drop (informational)."""
    episodes = nonfinite_episodes()
    rows = []
    for name in sorted(ESTIMATORS):
        r = run_estimator(name, episodes)
        detail = f"dropped {r.dropped_groups} groups; without the drop: {r.without_drop}" + (f"; {r.detail}" if r.detail else "")
        rows.append(Row("nonfinite", name, 1, int(r.contained), int(not r.contained), _status(not r.contained), detail[:600], r.as_dict()))
    return rows


def run(
    areas: Sequence[str] = AREAS,
    actions: int = 10_000,
    kills: int = 50,
    env_ids: Sequence[str] | None = None,
    seed: int = 0,
    hang_s: float = 5.0,
    http_timeout_s: float = 1.0,
) -> list[Row]:
    """Every row of the chosen areas, in AREAS order."""
    unknown = set(areas) - set(AREAS)
    if unknown:
        raise ValueError(f"unknown areas {sorted(unknown)}; choose from {', '.join(AREAS)}")
    runners: dict[str, Callable[[], list[Row]]] = {
        "fuzz": lambda: fuzz_rows(actions, env_ids, seed, hang_s),
        "sandbox": sandbox_rows,
        "http": lambda: http_rows(http_timeout_s),
        "store": lambda: drill_rows(kills, seed=seed),
        "nonfinite": nonfinite_rows,
    }
    rows: list[Row] = []
    for area in AREAS:
        if area in areas:
            t0 = time.perf_counter()
            rows += runners[area]()
            log.info("reliability %s: %.1f s", area, time.perf_counter() - t0)
    return rows


def area_summary(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per area: tried, contained or survived, failed, skipped or not available (the closing-note table)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        s = out.setdefault(r.area, {"area": r.area, "tried": 0, "contained": 0, "failed": 0, "skipped": 0})
        s["tried"] += r.tried
        s["contained"] += r.contained
        s["failed"] += r.failed
        s["skipped"] += r.status in ("skipped", "not available")
    return list(out.values())


# ---------------------------------------------------------------------- command line


def main(
    actions: int = 10_000,
    areas: str = ",".join(AREAS),
    json_out: Annotated[str | None, typer.Option("--json", help="write every row (and the summary) to this JSON file")] = None,
    envs: str = "",
    kills: int = 50,
    seed: int = 0,
    hang_s: float = 5.0,
    verbose: bool = False,
) -> None:
    """Hostile-input suite: fuzz every env, sandbox escapes, HTTP faults, kill drills, non-finite rewards.

    Prints a table per row and per area; exits 1 when any row failed."""
    from rich.console import Console
    from rich.table import Table

    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR)
    chosen = [a.strip() for a in areas.split(",") if a.strip()]
    env_ids = [e.strip() for e in envs.split(",") if e.strip()] or None
    t0 = time.perf_counter()
    try:
        rows = run(chosen, actions, kills, env_ids, seed, hang_s)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    seconds = time.perf_counter() - t0
    console = Console(width=max(120, Console().width))
    table = Table(title=f"creditgym reliability (actions/env={actions}, kills={kills}, seed={seed}, {seconds:.0f} s)")
    for col in ("area", "case", "tried", "contained/survived", "failed", "status", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r.area, r.case, str(r.tried), str(r.contained), str(r.failed), r.status, r.detail[:160])
    console.print(table)
    summary = area_summary(rows)
    totals = Table(title="per area")
    for col in ("area", "tried", "contained/survived", "failed", "skipped / n.a."):
        totals.add_column(col)
    for s in summary:
        totals.add_row(s["area"], str(s["tried"]), str(s["contained"]), str(s["failed"]), str(s["skipped"]))
    console.print(totals)
    if json_out:
        args = {"actions": actions, "areas": chosen, "envs": env_ids, "kills": kills, "seed": seed, "hang_s": hang_s}
        payload = {"args": args, "seconds": seconds, "summary": summary, "rows": [r.as_dict() for r in rows]}
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(payload, indent=1, default=str, allow_nan=False) + "\n")
    if any(r.failed for r in rows):
        raise typer.Exit(1)
