"""Shared trainer machinery: micro-batching, teacher-forced passes, optimizers, checkpoints, logging.

Every trainer loop is collect -> credit -> update -> (sync) -> log (ARCHITECTURE.md, "Trainers").
This module holds what the SFT, GRPO and PPO trainers share so each trainer file stays one recipe.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "RunLogger",
    "StageTimer",
    "apply_lora",
    "LR_SCHEDULES",
    "build_optimizer",
    "first_loss_position",
    "lr_factor",
    "forward_logprobs",
    "has_nonfinite",
    "masked_logprobs_no_grad",
    "row_logprobs_no_grad",
    "load_checkpoint",
    "micro_batches",
    "row_lengths",
    "save_checkpoint",
    "trainable_parameters",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- batching


def row_lengths(attention_mask_BT: torch.Tensor) -> list[int]:
    """Real length of each right-padded row (index of the last attended token + 1)."""
    m = attention_mask_BT.to(torch.long)
    T = m.shape[1]
    last = torch.where(m.any(1), T - m.flip(1).argmax(1), torch.zeros(m.shape[0], dtype=torch.long))
    return [int(x) for x in last]


def micro_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Split rows (kept in order) into micro-batches whose padded size `rows * max_len` stays within
    `token_budget` (a single row longer than the budget gets a micro-batch of its own)."""
    if token_budget <= 0:
        raise ValueError(f"token_budget must be > 0 (tokens per micro-batch), got {token_budget}")
    out: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i, n in enumerate(lengths):
        new_max = max(cur_max, int(n))
        if cur and new_max * (len(cur) + 1) > token_budget:
            out.append(cur)
            cur, new_max = [], int(n)
        cur.append(i)
        cur_max = new_max
    if cur:
        out.append(cur)
    return out


def forward_logprobs(
    policy: Any,
    ids_BT: torch.Tensor,
    attention_mask_BT: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    start: int = 0,
    mask_BT: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Teacher-forced `logp_BT` (with grad if enabled; `out[b, t]` is the log-probability of token t
    given its prefix, ARCHITECTURE.md "Logprob semantics") and, optionally, the full-vocabulary
    entropy of the distribution that predicted each token (`H_BT[b, t]`, 0 at t = 0).

    `start > 0` (the first position any loss reads, e.g. the first trainable token) computes the LM
    head only from position start - 1 on, as TRL's `logits_to_keep`; positions before `start` get 0.
    Policies whose `forward_logits` takes no `logits_to_keep` compute every position and are sliced.

    `mask_BT` (the positions the loss reads; requires nothing else of the caller) computes the LM
    head only where the mask is True, through the policy's `forward_logits_at` when it has one;
    `logp_BT` and `H_BT` are then 0 off the mask (and at t = 0 or where token t or its predecessor
    is padding), equal to the full pass on the mask."""
    from creditgym.agents.hf import token_logprobs
    from creditgym.trainers.losses import entropy_from_logits

    if mask_BT is not None and callable(getattr(policy, "forward_logits_at", None)):
        return _masked_logprobs(policy, ids_BT, attention_mask_BT, mask_BT, temperature, with_entropy)

    T = int(ids_BT.shape[1])
    keep = T - min(int(start), T) + 1 if int(start) > 0 else 0
    if keep and _accepts_logits_to_keep(policy):
        logits_BKV = policy.forward_logits(ids_BT, attention_mask_BT, logits_to_keep=keep)
    else:
        logits_BKV = policy.forward_logits(ids_BT, attention_mask_BT)
        logits_BKV = logits_BKV[:, -keep:] if keep else logits_BKV
    off = T - int(logits_BKV.shape[1])
    dev = logits_BKV.device
    ids_BK, attn_BK = ids_BT[:, off:].to(dev), attention_mask_BT[:, off:].to(dev)
    lp_BK = token_logprobs(logits_BKV, ids_BK, attn_BK, temperature)
    logp_BT = torch.nn.functional.pad(lp_BK, (T - int(lp_BK.shape[1]), 0))  # left: the positions not computed
    if not with_entropy:
        return logp_BT, None
    H_BK = entropy_from_logits(logits_BKV[:, :-1], temperature)
    return logp_BT, torch.nn.functional.pad(H_BK, (T - int(H_BK.shape[1]), 0))


def _masked_logprobs(
    policy: Any,
    ids_BT: torch.Tensor,
    attention_mask_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    temperature: float,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`forward_logprobs` on the mask only: the logits at position t - 1 predict token t."""
    from creditgym.agents.hf import select_positions, selected_logprobs
    from creditgym.trainers.losses import entropy_from_logits

    sel_BT, pos_BT = select_positions(mask_BT, attention_mask_BT)
    logits_NV = policy.forward_logits_at(ids_BT, attention_mask_BT, pos_BT)
    logp_BT = selected_logprobs(logits_NV, ids_BT, sel_BT, temperature)
    if not with_entropy:
        return logp_BT, None
    sel_BT = sel_BT.to(logits_NV.device)
    H_BT = torch.zeros(sel_BT.shape, dtype=torch.float32, device=logits_NV.device)
    return logp_BT, H_BT.masked_scatter(sel_BT, entropy_from_logits(logits_NV, temperature))


def first_loss_position(mask_BT: torch.Tensor) -> int:
    """The first column where any row of `mask_BT` is True (0 when none is): `forward_logprobs`'s
    `start` for a loss that reads only masked positions."""
    cols = mask_BT.any(dim=0).nonzero()
    return int(cols[0]) if cols.numel() else 0


def _takes_kwarg(fn: Any, name: str) -> bool:
    """Whether callable `fn` has a parameter `name` (False when its signature cannot be read)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _accepts_logits_to_keep(policy: Any) -> bool:
    return _takes_kwarg(policy.forward_logits, "logits_to_keep")


def masked_logprobs_no_grad(
    policy: Any, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, temperature: float, mask_BT: torch.Tensor
) -> torch.Tensor:
    """`policy.logprobs(...)` (no grad) for a loss that reads only `mask_BT`: on the mask alone when
    the policy takes `mask_BT=` (HFPolicy), else the full pass."""
    if _takes_kwarg(policy.logprobs, "mask_BT"):
        return policy.logprobs(ids_BT, attention_mask_BT, temperature, mask_BT=mask_BT)
    return policy.logprobs(ids_BT, attention_mask_BT, temperature)


def row_logprobs_no_grad(policy: Any, batch: Any, temperature: float, mask_BT: torch.Tensor) -> torch.Tensor:
    """`masked_logprobs_no_grad` run on the batch's row-token layout (the sequences the policy saw:
    one row per episode, or per turn for a per-turn history) and mapped back to the episode layout
    `[B, T]` (0 on tokens no row holds)."""
    ids_RT, attn_RT = batch.row_inputs()
    lp_RT = masked_logprobs_no_grad(policy, ids_RT, attn_RT, temperature, batch.to_rows(mask_BT.bool(), False))
    return batch.from_rows(lp_RT.detach())


def has_nonfinite(*tensors: torch.Tensor | None) -> bool:
    """True if any given tensor holds a NaN or an inf."""
    return any(t is not None and not bool(torch.isfinite(t).all()) for t in tensors)


# ---------------------------------------------------------------------- model and optimizer


def apply_lora(policy: Any, r: int, alpha: int, target_modules: Sequence[str] | None = None) -> None:
    """Wrap the policy's model in a LoRA adapter (peft) unless it already has one."""
    if getattr(policy, "has_adapter", False):
        return
    if not hasattr(policy, "add_lora"):
        raise TypeError(f"{type(policy).__name__} has no add_lora(); LoRA needs an HFPolicy")
    policy.add_lora(r=r, alpha=alpha, target_modules=target_modules)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    return params


LR_SCHEDULES = ("constant", "linear", "cosine")


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


# ---------------------------------------------------------------------- checkpoints


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


# ---------------------------------------------------------------------- logging


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
