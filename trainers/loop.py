"""`TrainerLoop`: the step loop every trainer shares (step and train, skipped updates, logging,
checkpoints every N steps, exact resume), and the finite-config check of every trainer Config.

A trainer calls `_setup_loop(learners, config, total_steps)`, writes `_step() -> metrics` (one
collect-credit-update round, or one SFT optimizer step) and `state_dict()` / `load_state_dict()` for
its data position beyond the step counter (checkpoint.py), and calls `maybe_resume()` last in its
`__init__`, once everything a checkpoint restores exists.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

from creditgym.trainers.checkpoint import (
    CHECKPOINT_NAME,
    learner_states,
    load_checkpoint,
    load_learner_states,
    log_offsets,
    save_checkpoint,
    truncate_logs,
)
from creditgym.trainers.run_log import RunLogger
from creditgym.trainers.schedule import Learner

__all__ = ["TrainerLoop", "check_finite_config"]

log = logging.getLogger(__name__)


def _nonfinite(value: Any, path: str) -> list[tuple[str, float]]:
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(path, value)]
    if isinstance(value, dict):
        return [bad for k, v in value.items() for bad in _nonfinite(v, f"{path}[{k!r}]")]
    if isinstance(value, (list, tuple)):
        return [bad for i, v in enumerate(value) for bad in _nonfinite(v, f"{path}[{i}]")]
    return []


def check_finite_config(cfg: Any) -> None:
    """Raise ValueError naming every field of the dataclass `cfg` that holds NaN or inf (also inside
    dicts, lists and tuples, e.g. `estimator_cfg`): a non-finite knob would silently poison training."""
    bad = [b for f in dataclasses.fields(cfg) for b in _nonfinite(getattr(cfg, f.name), f.name)]
    if bad:
        shown = ", ".join(f"{path}={value!r}" for path, value in bad)
        raise ValueError(f"{type(cfg).__name__}: non-finite value(s) {shown}; give every number a finite value")


class TrainerLoop:
    """Owns `self.learners` (role -> Learner; `self.model` / `self.optimizer` / `self.scheduler` are
    the first one's), `self.step_idx`, `self.skipped_steps`, `self.history` and the logger. The
    config must have `out_dir`, `resume`, `checkpoint_every`, `progress` and `tensorboard`."""

    description: str = "train"

    def _setup_loop(self, learners: dict[str, Learner], config: Any, total_steps: int) -> None:
        if not learners:
            raise ValueError("a trainer needs at least one policy to train")
        self.learners = learners
        first = next(iter(learners.values()))
        self.model, self.optimizer, self.scheduler = first.model, first.optimizer, first.scheduler
        self.config = config
        self.total_steps = int(total_steps)
        self.step_idx = 0
        self.skipped_steps = 0
        self.history: list[dict[str, float]] = []
        self._logger: RunLogger | None = None
        self.out_dir = Path(config.out_dir) if config.out_dir else None

    def maybe_resume(self) -> None:
        """Load `out_dir/checkpoint.pt` when the config asks to resume and it exists."""
        if self.config.resume and self.checkpoint_path is not None and self.checkpoint_path.is_file():
            self.load(self.checkpoint_path)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None

    def state_dict(self) -> dict[str, Any]:
        """The trainer's data position beyond the step counter (none here; trainers add theirs)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def save(self, path: str | Path | None = None) -> Path:
        """Write model, optimizer, scheduler, RNG states and data position to `path` (default
        `out_dir/checkpoint.pt`)."""
        target = Path(path) if path is not None else self.checkpoint_path
        if target is None:
            raise ValueError("no checkpoint path: set config.out_dir or pass path=")
        state = {
            "learners": learner_states(self.learners),
            "step": self.step_idx,
            "skipped_steps": self.skipped_steps,
            "extra": self.state_dict(),
            "logs": log_offsets(self.out_dir) if self.out_dir is not None else {},
        }
        return save_checkpoint(target, state)

    def load(self, path: str | Path) -> None:
        """Restore everything `save` wrote; training continues at the saved step. Loading the run's
        own checkpoint (`out_dir/checkpoint.pt`) also cuts metrics.jsonl and episodes.jsonl back to
        the checkpoint, so a resumed run logs each step, and keeps each step's episodes, once."""
        state = load_checkpoint(path)
        load_learner_states(self.learners, state["learners"], path)
        self.step_idx = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        if state.get("extra"):
            self.load_state_dict(state["extra"])
        own = self.checkpoint_path is not None and Path(path).resolve() == self.checkpoint_path.resolve()
        if own and self.out_dir is not None and "logs" in state:
            truncate_logs(self.out_dir, state["logs"])
        log.info("resumed from %s at step %d", path, self.step_idx)

    # ------------------------------------------------------------------ the loop
    def _step(self) -> dict[str, float]:
        raise NotImplementedError

    def step(self) -> dict[str, float]:
        """One round (collect -> credit -> update -> sync -> log); returns its metrics."""
        metrics = self._step()
        self.step_idx += 1
        metrics["skipped_steps"] = float(self.skipped_steps)
        self.history.append(metrics)
        cfg = self.config
        if self.out_dir is not None or cfg.progress:
            if self._logger is None:
                self._logger = RunLogger(self.out_dir, self.total_steps, self.description, progress=cfg.progress,
                                         tensorboard=cfg.tensorboard, config=cfg,
                                         wandb_project=getattr(cfg, "wandb_project", None))  # fmt: skip
            self._logger.log(self.step_idx, metrics)
        if cfg.checkpoint_every > 0 and self.checkpoint_path is not None and self.step_idx % cfg.checkpoint_every == 0:
            self.save()
        return metrics

    def train(self) -> dict[str, float]:
        """Run until `total_steps`; returns the last step's metrics (plus `steps`, `skipped_steps`)."""
        last: dict[str, float] = {}
        try:
            while self.step_idx < self.total_steps:
                last = self.step()
        finally:
            self._close_logger()
        return {**last, "steps": float(self.step_idx), "skipped_steps": float(self.skipped_steps)}

    def _close_logger(self) -> None:
        if self._logger is not None:
            self._logger.close()
            self._logger = None

    def close(self) -> None:
        """Release what the trainer opened (the run logger here; subclasses add their Collector's env
        workers and the async worker). Idempotent; `with Trainer(...) as tr:` calls it on exit."""
        self._close_logger()

    def __enter__(self) -> TrainerLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _skip(self, what: str) -> dict[str, float]:
        """Count and warn about a skipped update (NaN/inf in loss or advantages, or nothing to train)."""
        self.skipped_steps += 1
        log.warning("step %d: %s; update skipped (%d skipped so far)", self.step_idx, what, self.skipped_steps)
        for ln in self.learners.values():
            ln.optimizer.zero_grad(set_to_none=True)
        return {"skipped": 1.0}
