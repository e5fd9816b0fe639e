"""`TrainerLoop`: the step loop, checkpoints, exact resume and logging every trainer shares.

A trainer subclasses it and writes `_step() -> dict[str, float]` (one collect-credit-update round,
or one SFT optimizer step) and `_extra_state()` / `_load_extra_state()` for anything beyond the
model, optimizer and scheduler. Data position is the step counter (plus whatever the trainer keeps
in its extra state), so a resumed run replays the same batches and seeds.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from creditgym.trainers.common import RunLogger, load_checkpoint, save_checkpoint

__all__ = ["Learner", "TrainerLoop"]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
RUN_LOGS = ("metrics.jsonl", "episodes.jsonl")
"""Append-only files in out_dir that a resume truncates back to their size at the checkpoint."""


def log_offsets(out_dir: Path) -> dict[str, int]:
    """Byte size of each run log in `out_dir` (synced to disk first, so the sizes are durable)."""
    sizes = {}
    for name in RUN_LOGS:
        path = out_dir / name
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            sizes[name] = path.stat().st_size
    return sizes


def truncate_logs(out_dir: Path, sizes: dict[str, int]) -> None:
    """Cut each run log back to its size at the checkpoint (0 when it did not exist then): rows and
    episodes of the steps after the checkpoint are replayed by the resumed run, so they must go.
    Idempotent, so a crash during it is repaired by the next resume."""
    for name in RUN_LOGS:
        path = out_dir / name
        if not path.is_file():
            continue
        keep, size = int(sizes.get(name, 0)), path.stat().st_size
        if size > keep:
            with open(path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
            log.info("resume: cut %s from %d to %d bytes (records after the checkpoint)", path, size, keep)
        elif size < keep:
            log.warning("resume: %s has %d bytes, the checkpoint saw %d; records were lost", path, size, keep)


@dataclass
class Learner:
    """One trained policy with its optimizer and scheduler (self-play trains one per role)."""

    policy: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any

    @property
    def model(self) -> torch.nn.Module:
        return self.policy.model


class TrainerLoop:
    """Owns `self.learners` (role -> Learner; `self.model` / `self.optimizer` / `self.scheduler` are
    the first one's), `self.step_idx` and the logger."""

    total_steps: int = 0
    description: str = "train"

    def _setup_loop(self, learners: dict[str, Learner], config: Any, total_steps: int) -> None:
        if not learners:
            raise ValueError("a trainer needs at least one policy to train")
        self.learners = learners
        first = next(iter(learners.values()))
        self.model = first.model
        self.optimizer = first.optimizer
        self.scheduler = first.scheduler
        self.config = config
        self.total_steps = int(total_steps)
        self.step_idx = 0
        self.skipped_steps = 0
        self.history: list[dict[str, float]] = []
        self._logger: RunLogger | None = None
        self.out_dir = Path(config.out_dir) if getattr(config, "out_dir", None) else None
        resume = getattr(config, "resume", False)
        if resume and self.checkpoint_path is not None and self.checkpoint_path.is_file():
            self.load(self.checkpoint_path)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        return None

    def save(self, path: str | Path | None = None) -> Path:
        """Write model, optimizer, scheduler, RNG states and data position to `path` (default
        `out_dir/checkpoint.pt`)."""
        target = Path(path) if path is not None else self.checkpoint_path
        if target is None:
            raise ValueError("no checkpoint path: set config.out_dir or pass path=")
        state = {
            "learners": {
                role: {
                    "model": {k: v.detach().cpu() for k, v in ln.model.state_dict().items()},
                    "optimizer": ln.optimizer.state_dict(),
                    "scheduler": ln.scheduler.state_dict() if ln.scheduler is not None else None,
                }
                for role, ln in self.learners.items()
            },
            "step": self.step_idx,
            "skipped_steps": self.skipped_steps,
            "extra": self._extra_state(),
            "logs": log_offsets(self.out_dir) if self.out_dir is not None else {},
        }
        return save_checkpoint(target, state)

    def load(self, path: str | Path) -> None:
        """Restore everything `save` wrote; training continues at the saved step. Loading the run's
        own checkpoint (`out_dir/checkpoint.pt`) also cuts metrics.jsonl and episodes.jsonl back to
        the checkpoint, so a resumed run logs each step, and keeps each step's episodes, once."""
        state = load_checkpoint(path)
        saved = state["learners"]
        if set(saved) != set(self.learners):
            raise ValueError(f"checkpoint {path} holds policies {sorted(saved)}, this trainer has {sorted(self.learners)}")
        for role, ln in self.learners.items():
            ln.model.load_state_dict(saved[role]["model"])
            ln.optimizer.load_state_dict(saved[role]["optimizer"])
            if ln.scheduler is not None and saved[role].get("scheduler") is not None:
                ln.scheduler.load_state_dict(saved[role]["scheduler"])
        self.step_idx = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self._load_extra_state(state.get("extra", {}))
        own = self.checkpoint_path is not None and Path(path).resolve() == self.checkpoint_path.resolve()
        if own and self.out_dir is not None and "logs" in state:
            truncate_logs(self.out_dir, state["logs"])
        log.info("resumed from %s at step %d", path, self.step_idx)

    # ------------------------------------------------------------------ the loop
    def _step(self) -> dict[str, float]:
        raise NotImplementedError

    def _logger_for_run(self) -> RunLogger:
        if self._logger is None:
            cfg = self.config
            self._logger = RunLogger(
                self.out_dir,
                self.total_steps,
                self.description,
                progress=getattr(cfg, "progress", False),
                tensorboard=getattr(cfg, "tensorboard", True),
                config=cfg,
                wandb_project=getattr(cfg, "wandb_project", None),
            )
        return self._logger

    def step(self) -> dict[str, float]:
        """One round (collect -> credit -> update -> sync -> log); returns its metrics."""
        metrics = self._step()
        self.step_idx += 1
        metrics["skipped_steps"] = float(self.skipped_steps)
        self.history.append(metrics)
        if self.out_dir is not None or getattr(self.config, "progress", False):
            self._logger_for_run().log(self.step_idx, metrics)
        every = int(getattr(self.config, "checkpoint_every", 0) or 0)
        if every > 0 and self.checkpoint_path is not None and self.step_idx % every == 0:
            self.save()
        return metrics

    def train(self) -> dict[str, float]:
        """Run until `total_steps`; returns the last step's metrics (plus `steps`, `skipped_steps`)."""
        last: dict[str, float] = {}
        try:
            while self.step_idx < self.total_steps:
                last = self.step()
        finally:
            if self._logger is not None:
                self._logger.close()
                self._logger = None
        last = dict(last)
        last["steps"] = float(self.step_idx)
        last["skipped_steps"] = float(self.skipped_steps)
        return last

    def _skip(self, what: str) -> dict[str, float]:
        """Count and warn about a skipped update (NaN/inf in loss or advantages, or nothing to train)."""
        self.skipped_steps += 1
        log.warning("step %d: %s; update skipped (%d skipped so far)", self.step_idx, what, self.skipped_steps)
        for ln in self.learners.values():
            ln.optimizer.zero_grad(set_to_none=True)
        return {"skipped": 1.0}

    def _optimizer_step(self, max_grad_norm: float | None, learner: Learner | None = None) -> float:
        """Clip gradients by norm, step optimizer and scheduler; returns the pre-clip norm (NaN skips)."""
        ln = learner if learner is not None else next(iter(self.learners.values()))
        params = [p for g in ln.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return 0.0
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm else math.inf)
        if not math.isfinite(float(norm)):
            self._skip("non-finite gradient norm")
            return float("nan")
        ln.optimizer.step()
        if ln.scheduler is not None:
            ln.scheduler.step()
        ln.optimizer.zero_grad(set_to_none=True)
        return float(norm)
