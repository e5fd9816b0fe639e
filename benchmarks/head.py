"""`creditgym bench head`: a training pass with the LM head on every position vs on the loss mask only.

The quickstart's tiny model, SFT batches of 16 scripted-expert episodes of the easy search env (about
13% of their tokens are action tokens). Both sides run the same batches in one process, alternating,
forward and backward of the masked NLL: `forward_logprobs(start=first_loss_position(mask))` (LM head
from the first action token on, as TRL's `logits_to_keep`) against `forward_logprobs(mask_BT=mask)`
(LM head and softmax only where the loss reads). Not a timed test: run it by hand.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import typer
from rich.console import Console
from rich.table import Table

from creditgym.agents.offline import expert_episodes
from creditgym.batch import CreditBatch
from creditgym.trainers import losses
from creditgym.trainers.logprobs import first_loss_position, forward_logprobs
from creditgym.trainers.quickstart import QuickstartConfig, tiny_policy

__all__ = ["expert_batches", "main", "time_head_passes"]


def expert_batches(policy: Any, n_batches: int, batch_episodes: int, seed: int) -> list[CreditBatch]:
    """`n_batches` CreditBatches of `batch_episodes` scripted-expert episodes of the quickstart's env."""
    cfg = QuickstartConfig()
    eps = expert_episodes(
        cfg.env_id, n_batches * batch_episodes, tokenizer=policy.tokenizer, epsilon=cfg.epsilon, seed=seed,
        env_kwargs=cfg.train_env_kwargs(),
    )  # fmt: skip
    return [CreditBatch.from_episodes(eps[i : i + batch_episodes]) for i in range(0, len(eps), batch_episodes)]


def time_head_passes(policy: Any, batches: list[Any], repeats: int = 1) -> dict[str, float]:
    """Seconds per forward+backward pass for each side, alternating side by side over `batches`."""
    total = {"full_head_s": 0.0, "mask_head_s": 0.0}
    policy.model.train()
    for _ in range(repeats):
        for batch in batches:
            mask_BT = batch.loss_mask_BT
            for side in total:
                kw = {"mask_BT": mask_BT} if side == "mask_head_s" else {}
                t0 = time.perf_counter()
                logp_BT, _ = forward_logprobs(policy, batch.ids_BT, batch.attention_mask_BT, start=first_loss_position(mask_BT), **kw)
                losses.sft_loss(logp_BT, mask_BT, "token-mean", None, float(mask_BT.sum())).backward()
                policy.model.zero_grad(set_to_none=True)
                total[side] += time.perf_counter() - t0
    n = max(len(batches) * repeats, 1)
    out = {k: v / n for k, v in total.items()}
    out["speedup"] = out["full_head_s"] / max(out["mask_head_s"], 1e-12)
    out["loss_token_frac"] = sum(float(b.loss_mask_BT.sum()) for b in batches) / max(
        sum(float(b.attention_mask_BT.sum()) for b in batches), 1.0
    )
    return out


def main(
    batches: int = typer.Option(12, help="SFT batches (timed on both sides, after one warm-up batch)"),
    batch_episodes: int = typer.Option(16, help="episodes per batch"),
    threads: int = typer.Option(2, help="torch threads"),
    seed: int = typer.Option(0),
) -> None:
    """Time a training pass with the full LM head and with the LM head on the loss mask only."""
    torch.set_num_threads(threads)
    policy = tiny_policy(QuickstartConfig(seed=seed))
    data = expert_batches(policy, batches + 1, batch_episodes, seed)
    time_head_passes(policy, data[:1])  # warm-up
    r = time_head_passes(policy, data[1:])
    table = Table(title=f"training pass, quickstart model, {batch_episodes} episodes/batch, {threads} threads, {batches} batches")
    for col in ("LM head on", "s / pass"):
        table.add_column(col)
    table.add_row("every position from the first action token", f"{r['full_head_s']:.3f}")
    table.add_row("the loss mask only", f"{r['mask_head_s']:.3f}")
    console = Console()
    console.print(table)
    console.print(f"speed-up {r['speedup']:.2f}x; action tokens are {100 * r['loss_token_frac']:.0f}% of the real tokens")
