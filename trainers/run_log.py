"""Run logging: per-stage wall time (`StageTimer`) and per-step metrics (`RunLogger`: metrics.jsonl,
tensorboard, optional wandb and a rich progress bar)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunLogger", "StageTimer"]


class StageTimer:
    """Accumulates wall seconds per stage: `with timer("rollout"): ...`; `timer.pop()` returns and resets."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def pop(self) -> dict[str, float]:
        out = {f"time/{k}_s": v for k, v in self.seconds.items()}
        self.seconds = {}
        return out


def _jsonable_config(config: Any) -> dict[str, Any]:
    d = asdict(config) if is_dataclass(config) and not isinstance(config, type) else dict(config)
    return json.loads(json.dumps(d, default=str))


class RunLogger:
    """Per-step metrics to tensorboard (`out_dir/tb`), a JSONL file (`out_dir/metrics.jsonl`) and an
    optional rich progress bar. With `out_dir=None` only the progress bar (if on) is kept."""

    def __init__(
        self,
        out_dir: str | os.PathLike[str] | None,
        total_steps: int,
        description: str,
        progress: bool = True,
        tensorboard: bool = True,
        config: Any = None,
        wandb_project: str | None = None,
    ):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._tb: Any = None
        self._wandb: Any = None
        self._jsonl: Any = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8")
            if config is not None:
                (self.out_dir / "config.json").write_text(json.dumps(_jsonable_config(config), indent=2))
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tb"))
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise ImportError("wandb logging needs `pip install creditgym[wandb]`") from e
            self._wandb = wandb.init(project=wandb_project, config=_jsonable_config(config) if config else None)
        self._progress: Any = None
        self._task: Any = None
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(description, total=total_steps, info="")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, **clean}) + "\n")
            self._jsonl.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)
        if self._progress is not None:
            keys = [k for k in ("reward", "success", "loss", "kl_ref") if k in clean]
            self._progress.update(
                self._task, completed=step, info=" ".join(f"{k}={clean[k]:.3f}" for k in keys)
            )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
