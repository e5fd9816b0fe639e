"""Optimisation: AdamW over the trainable parameters, the learning-rate schedule, gradient clipping."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from creditgym.agents.base import TrainablePolicy

__all__ = ["LR_SCHEDULES", "Learner", "build_optimizer", "lr_factor", "optimizer_step", "trainable_parameters"]

log = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class Learner:
    """One trained policy with its optimizer and scheduler (self-play trains one per role)."""

    policy: TrainablePolicy
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR

    @property
    def model(self) -> torch.nn.Module:
        return self.policy.model


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    return params


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str = "constant", min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based): linear warm-up over
    `warmup_steps`, then constant, or a linear/cosine decay to `min_ratio` at `total_steps`."""
    warm = max(int(warmup_steps), 0)
    if warm and step < warm:
        return (step + 1) / warm
    if schedule == "constant" or total_steps <= warm:
        return 1.0
    frac = min(max((step - warm) / max(total_steps - warm, 1), 0.0), 1.0)
    shape = 1.0 - frac if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))
    return min_ratio + (1.0 - min_ratio) * shape


def build_optimizer(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    betas: tuple[float, float] = (0.9, 0.999),
    *,
    schedule: str = "constant",
    total_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over trainable parameters; linear warm-up, then a constant learning rate or a linear or
    cosine decay to `min_lr_ratio * lr` over `total_steps` optimizer steps (`lr_factor`)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; use one of {LR_SCHEDULES}")
    if schedule != "constant" and total_steps <= 0:
        raise ValueError(f"lr schedule {schedule!r} needs total_steps > 0 (the planned optimizer steps)")
    opt = torch.optim.AdamW(trainable_parameters(model), lr=lr, weight_decay=weight_decay, betas=betas)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, warmup_steps, total_steps, schedule, float(min_lr_ratio))
    )
    return opt, sched


def optimizer_step(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None, max_grad_norm: float | None
) -> float:
    """Clip gradients by norm, step optimizer and scheduler, clear the gradients; returns the pre-clip
    norm. A non-finite norm steps nothing and returns NaN (the caller counts the skipped update)."""
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm else math.inf)
    if not math.isfinite(float(norm)):
        optimizer.zero_grad(set_to_none=True)
        return float("nan")
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)
