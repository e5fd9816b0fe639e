"""`creditgym bench async`: the synchronous loop against bounded-staleness async collection.

SearchEasy with the tiny model warm-started by SFT as in `examples/train_search_grpo.py`; the same
weights then train three times: synchronously, synchronously with truncated importance sampling
(the update work async does), and with `max_staleness=1` (the next rollout on a worker thread behind
this update; TIS on). Per run: wall time, the learner's wait for rollouts, update time, the worker's
collection time and how much of it ran behind the update, the largest version gap, and held-out
success before and after. docs/scale.md ("Async collection") holds the measured table. Not a timed
test: run it by hand.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import typer
from rich.console import Console
from rich.table import Table

from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

__all__ = ["VARIANTS", "main", "run_variants"]

VARIANTS: tuple[tuple[str, int, float | None], ...] = (
    ("synchronous", 0, None),
    ("synchronous + TIS 2.0", 0, 2.0),
    ("max_staleness=1 (TIS 2.0)", 1, None),
)
"""(label, max_staleness, tis_cap): async switches TIS on itself."""


def run_variants(
    policy: Any,
    env_id: str,
    config: Mapping[str, Any],
    variants: Sequence[tuple[str, int, float | None]] = VARIANTS,
) -> list[dict[str, Any]]:
    """Train `policy` from its current weights once per variant (weights restored in between; left
    at the last run's) with GRPOConfig(**config); one row of summed stage times per run."""
    start_state = copy.deepcopy(policy.model.state_dict())
    rows = []
    for label, staleness, tis_cap in variants:
        policy.model.load_state_dict(start_state)
        cfg = GRPOConfig(**{**config, "max_staleness": staleness, "tis_cap": tis_cap, "tensorboard": False})
        trainer = GRPOTrainer(policy, env_id, cfg)
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
        hist = trainer.history
        row: dict[str, Any] = {
            "run": label,
            "wall_s": wall,
            "rollout_wait_s": sum(h["time/rollout_s"] for h in hist),
            "update_s": sum(h["time/update_s"] for h in hist),
            "reward_first": hist[0]["reward"],
            "reward_last": hist[-1]["reward"],
        }
        if staleness:
            row["collect_s"] = sum(h["async/collect_s"] for h in hist)
            row["overlap_s"] = sum(h["time/overlap_s"] for h in hist)
            row["hidden_frac"] = row["overlap_s"] / row["collect_s"] if row["collect_s"] > 0 else 0.0
            row["gap_max"] = max(h["async/version_gap_max"] for h in hist)
        rows.append(row)
    return rows


def main(
    steps: int = typer.Option(8, help="RL steps per run"),
    num_groups: int = typer.Option(8),
    group_size: int = typer.Option(8),
    expert_episodes: int = typer.Option(256, help="scripted-expert episodes of the SFT warm start"),
    sft_epochs: int = typer.Option(4),
    sft_lr: float = typer.Option(1e-2),
    n_eval: int = typer.Option(64, help="held-out tasks evaluated before and after each run"),
    threads: int = typer.Option(1, help="torch threads (per Python thread)"),
    seed: int = typer.Option(0),
) -> None:
    """Time the synchronous loop and max_staleness=1 on SearchEasy from the same warm-started weights."""
    from creditgym.envs.search import SEARCH_EASY
    from creditgym.trainers.evaluate import evaluate
    from creditgym.trainers.quickstart import QuickstartConfig, warm_start

    torch.set_num_threads(threads)
    env_kwargs = {"topk": 1}
    warm = QuickstartConfig(env_id=SEARCH_EASY, seed=seed, hidden_size=128, num_layers=2, induction_steps=0,
                            expert_episodes=expert_episodes, epsilon=0.3, sft_epochs=sft_epochs, sft_lr=sft_lr,
                            progress=False)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        policy, _ = warm_start(warm, Path(tmp) / "warm_start", env_kwargs=env_kwargs)
    eval_kw: dict[str, Any] = dict(n_eval=n_eval, env_kwargs=env_kwargs, max_new_tokens=48)
    before = evaluate(policy, SEARCH_EASY, **eval_kw).success
    config = dict(estimator="turn_return", steps=steps, num_groups=num_groups, group_size=group_size, lr=5e-4,
                  max_new_tokens=48, env_kwargs=env_kwargs, seed=seed)  # fmt: skip
    start = copy.deepcopy(policy.model.state_dict())
    table = Table(
        title=f"SearchEasy, tiny model, {steps} steps x {num_groups * group_size} episodes, {threads} thread(s)"
    )
    for col in (
        "run",
        "wall s",
        "learner waits s",
        "update s",
        "collection s",
        "behind update",
        "gap",
        "success after",
    ):
        table.add_column(col)
    for variant in VARIANTS:
        policy.model.load_state_dict(start)
        (row,) = run_variants(policy, SEARCH_EASY, config, [variant])
        after = evaluate(policy, SEARCH_EASY, **eval_kw).success
        collect = f"{row['collect_s']:.1f}" if "collect_s" in row else ""
        behind = f"{row['overlap_s']:.1f} s ({100 * row['hidden_frac']:.0f}%)" if "overlap_s" in row else ""
        gap = f"{row['gap_max']:.0f}" if "gap_max" in row else "0"
        table.add_row(row["run"], f"{row['wall_s']:.1f}", f"{row['rollout_wait_s']:.1f}", f"{row['update_s']:.1f}",
                      collect, behind, gap, f"{after:.2f}")  # fmt: skip
    console = Console()
    console.print(table)
    console.print(f"held-out success before RL: {before:.2f}")
