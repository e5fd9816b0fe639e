"""`creditgym bench trl`: what creditgym's credit costs inside an engine (issue 22's speed targets).

1. Inside TRL's step: CreditGRPOTrainer (tiny model, SearchEasy, TRL's HF generation on CPU) times its
   `credit_advantages` (gather, `CreditBatch.from_token_tensors`, `credit.compute`, back to the
   completion layout) against TRL's whole step; target < 2%.
2. At engine scale: converting a synthetic engine batch of `rows x tokens` (left padding, multi-turn
   rows with masked env tokens, groups of `group_size`) and computing the advantages, against a stated
   engine step time (`--engine-step-s`, the wall time of one RL step of the engine at that batch);
   target < 1%. Needs no TRL.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch
import typer

from creditgym import CreditBatch
from creditgym.agents import tiny
from creditgym.credit import compute
from creditgym.envs.search import SEARCH_EASY

__all__ = ["engine_batch", "main", "time_conversion", "time_inside_trl"]


def engine_batch(rows: int, tokens: int, turns: int, group_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """What an engine holds after a multi-turn rollout: left-padded rows of `turns` action runs with env
    tokens between them, a reward at the end of each turn, one state key per turn."""
    g = torch.Generator().manual_seed(seed)
    pad_B = torch.randint(0, tokens // 8, (rows,), generator=g)
    seg = (tokens - tokens // 8) // (2 * turns)  # each turn: env tokens then action tokens
    t_T = torch.arange(tokens)
    rel_BT = t_T[None, :] - pad_B[:, None]
    attn = (rel_BT >= 0) & (rel_BT < 2 * turns * seg)
    loss = attn & ((rel_BT // seg) % 2 == 1)
    rewards = torch.zeros(rows, tokens)
    ends_BK = pad_B[:, None] + (2 * torch.arange(turns)[None, :] + 2) * seg - 1
    rewards.scatter_(1, ends_BK, torch.randint(0, 2, (rows, turns), generator=g).float())
    return {
        "ids_BT": torch.randint(0, 32000, (rows, tokens), generator=g), "attention_mask_BT": attn.long(),
        "loss_mask_BT": loss.long(), "rewards_BT": rewards,
        "group_ids": torch.arange(rows) // group_size,
        "state_keys": torch.randint(0, 3 * turns, (rows, turns), generator=g),
    }


def time_conversion(eng: dict[str, torch.Tensor], estimator: str) -> dict[str, float]:
    """Seconds to build the CreditBatch, compute the advantages and map them back to the engine layout
    (wall time per stage; `cpu_s`: the process's CPU time for all of it, which a loaded machine inflates less)."""
    c0, t0 = time.process_time(), time.perf_counter()
    batch = CreditBatch.from_token_tensors(
        eng["loss_mask_BT"], eng["group_ids"], rewards_BT=eng["rewards_BT"], ids_BT=eng["ids_BT"],
        attention_mask_BT=eng["attention_mask_BT"], state_keys=eng["state_keys"].tolist(),
    )
    t1 = time.perf_counter()
    adv = compute(estimator, batch)
    t2 = time.perf_counter()
    batch.to_token_tensors(adv.token_BT)
    t3 = time.perf_counter()
    return {"convert_s": t1 - t0, "credit_s": t2 - t1, "back_s": t3 - t2, "total_s": t3 - t0, "cpu_s": time.process_time() - c0}


def time_inside_trl(estimator: str, steps: int, batch: int) -> dict[str, float]:
    """Seconds per TRL step and of creditgym's credit inside it (CreditGRPOTrainer, tiny model, CPU)."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl import GRPOConfig  # TRL is an extra (and so the module that imports it): only for this part

    from creditgym.integrations.trl import CreditGRPOTrainer, task_dataset

    class TimedTrainer(CreditGRPOTrainer):
        credit_s = 0.0

        def credit_advantages(self, episodes):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            out = super().credit_advantages(episodes)
            self.credit_s += time.perf_counter() - t0
            return out

    policy = tiny.build(seed=0)
    args = GRPOConfig(output_dir=tempfile.mkdtemp(), use_cpu=True, per_device_train_batch_size=batch, num_generations=batch,
                      max_steps=steps, max_completion_length=32, report_to="none", save_strategy="no", seed=0,
                      disable_tqdm=True, logging_strategy="no")
    trainer = TimedTrainer(policy.model, SEARCH_EASY, args, estimator=estimator, processing_class=policy.tokenizer,
                           train_dataset=task_dataset(SEARCH_EASY, range(steps)))
    t0 = time.perf_counter()
    trainer.train()
    step_s = (time.perf_counter() - t0) / steps
    return {"step_s": step_s, "credit_s": trainer.credit_s / steps}


def main(
    estimator: str = typer.Option("gigpo", help="creditgym estimator"),
    rows: int = typer.Option(4096, help="engine batch: sequences"),
    tokens: int = typer.Option(1024, help="engine batch: token slots per sequence"),
    turns: int = typer.Option(4, help="turns per sequence"),
    group_size: int = typer.Option(8, help="sequences per group"),
    engine_step_s: float = typer.Option(60.0, help="stated engine step time at that batch (seconds)"),
    trl: bool = typer.Option(True, help="also measure inside TRL's step (needs creditgym[trl])"),
    trl_steps: int = typer.Option(3, help="TRL steps to time"),
    trl_batch: int = typer.Option(8, help="episodes per TRL step (one group)"),
    threads: int = typer.Option(2, help="torch threads"),
) -> None:
    """creditgym's credit inside an engine: overhead in TRL's step and at 4096 x 1024 engine scale."""
    torch.set_num_threads(threads)
    conv = time_conversion(engine_batch(rows, tokens, turns, group_size), estimator)
    typer.echo(f"engine batch {rows} x {tokens} ({turns} turns, groups of {group_size}), {estimator}: "
               + ", ".join(f"{k} {v:.3f}" for k, v in conv.items())
               + f"; {100 * conv['total_s'] / engine_step_s:.2f}% of a {engine_step_s:g} s engine step (target < 1%)")
    if trl:
        t = time_inside_trl(estimator, trl_steps, trl_batch)
        typer.echo(f"inside TRL (tiny model, CPU, {trl_batch} episodes/step): step {t['step_s']:.3f} s, credit "
                   f"{t['credit_s'] * 1e3:.2f} ms = {100 * t['credit_s'] / (t['step_s'] - t['credit_s']):.2f}% "
                   "added to TRL's step (target < 2%)")
