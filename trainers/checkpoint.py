"""Checkpoints and exact resume: atomic files, learner states, RNG states and run-log offsets.

A checkpoint holds each learner's model, optimizer and scheduler, the step counters, the trainer's
own `state_dict()` (data position: its generator, the Collector's counters, the critic) and the byte
size of each append-only run log, so a resumed run cuts the logs back and replays the same steps.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from creditgym.trainers.schedule import Learner

__all__ = [
    "CHECKPOINT_NAME",
    "RUN_LOGS",
    "learner_states",
    "load_checkpoint",
    "load_learner_states",
    "log_offsets",
    "save_checkpoint",
    "truncate_logs",
]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
RUN_LOGS = ("metrics.jsonl", "episodes.jsonl")
"""Append-only files in out_dir that a resume truncates back to their size at the checkpoint."""


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Atomically write a checkpoint (write to a temp file, fsync, rename), plus global RNG states."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = dict(state)
    state["rng"] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` and restore the global RNG states."""
    state = torch.load(Path(path), map_location="cpu", weights_only=False)
    rng = state.get("rng")
    if rng:
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
    return state


def learner_states(learners: Mapping[str, Learner]) -> dict[str, dict[str, Any]]:
    """Per role: the model (on CPU), optimizer and scheduler state dicts."""
    return {
        role: {
            "model": {k: v.detach().cpu() for k, v in ln.model.state_dict().items()},
            "optimizer": ln.optimizer.state_dict(),
            "scheduler": ln.scheduler.state_dict() if ln.scheduler is not None else None,
        }
        for role, ln in learners.items()
    }


def load_learner_states(learners: Mapping[str, Learner], saved: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Restore what `learner_states` wrote; the roles must match."""
    if set(saved) != set(learners):
        raise ValueError(f"checkpoint {path} holds policies {sorted(saved)}, this trainer has {sorted(learners)}")
    for role, ln in learners.items():
        ln.model.load_state_dict(saved[role]["model"])
        ln.optimizer.load_state_dict(saved[role]["optimizer"])
        if ln.scheduler is not None and saved[role].get("scheduler") is not None:
            ln.scheduler.load_state_dict(saved[role]["scheduler"])


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
