"""`creditgym bench credit`: every estimator, vectorised vs its loop reference (CREDIT.md 10).

The synthetic batch is built directly as tensors (no Episodes), so generation takes seconds even at
B = 4096, K = 16, T = 8192. The loop reference runs on the first `loop_episodes` episodes and its
time is scaled linearly to B (the table says so).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from creditgym.batch import CreditBatch
from creditgym.credit.registry import ESTIMATORS, REFERENCES, compute

__all__ = ["BENCH_CASES", "BenchRow", "main", "run", "synthetic_batch"]

log = logging.getLogger(__name__)

# (label, estimator, knobs): every estimator at its defaults plus the other gae levels and spo's tree
BENCH_CASES: list[tuple[str, str, dict[str, Any]]] = [
    *[(name, name, {}) for name in (
        "grpo", "dr_grpo", "rloo", "reinforce++", "reinforce++_baseline", "remax", "gae", "turn_return",
        "mt_grpo", "a2tgpo", "pure", "rebn", "gigpo", "tree", "tree_grpo", "spo", "vineppo", "igpo", "siop",
    )],
    ("gae(level=turn)", "gae", {"level": "turn"}),
    ("gae(level=hierarchical)", "gae", {"level": "hierarchical"}),
    ("spo(variant=tree)", "spo", {"variant": "tree"}),
]  # fmt: skip


def synthetic_batch(B: int, K: int, T: int, seed: int = 0, group_size: int = 8) -> CreditBatch:
    """A random valid batch with every optional field: prefix trees shared with each group's first
    episode, 3K possible states, ~30% truncated, turn k's tokens inside slots [k*T/K, (k+1)*T/K).
    `token_turn_BT` is int64 as `CreditBatch.from_episodes` packs it (int32 works too, with less
    memory: the broadcast converts it block by block)."""
    if T < 2 * K:
        raise ValueError(f"synthetic_batch needs T >= 2K (got T={T}, K={K}): each turn needs a token slot")
    g = torch.Generator().manual_seed(seed)
    trunc = torch.rand(B, generator=g) < 0.3
    n_B = torch.randint(1, K + 1, (B,), generator=g)
    n_B = torch.where(trunc, n_B.clamp(max=max(K - 1, 0)), n_B)
    trunc &= n_B > 0
    k = torch.arange(K)
    mask = k[None, :] < n_B[:, None]
    first = (torch.arange(B) // group_size) * group_size
    prefix = (torch.rand(B, generator=g) * (torch.minimum(n_B, n_B[first]) + 1)).floor().long()
    shared = k[None, :] < prefix[:, None]
    rewards = torch.randint(0, 3, (B, K), generator=g).float() / 2
    rewards = torch.where(torch.rand(B, K, generator=g) < 0.5, rewards, torch.rand(B, K, generator=g))
    state = torch.randint(0, 3 * K, (B, K), generator=g)
    rewards, state = (torch.where(shared, x[first], x) for x in (rewards, state))
    rewards = torch.where(mask, rewards, 0.0)
    node = torch.where(shared, first[:, None] * K + k, torch.arange(B)[:, None] * K + k)
    L = T // K
    obs = torch.randint(0, max(1, L // 4), (B, K), generator=g)
    act = (torch.rand(B, K, generator=g) * (L - obs)).long().clamp(min=1)
    t = torch.arange(T)
    slot, within = (t // L).clamp(max=K - 1), t % L
    o_BT = obs[:, slot]
    is_act = (within >= o_BT) & (within < o_BT + act[:, slot]) & (t < K * L)
    del o_BT
    is_act &= mask[:, slot]
    tt = torch.where(is_act, slot, -1)  # int64, as CreditBatch.from_episodes packs it
    loss = is_act & (torch.rand(B, T, generator=g) > 0.05)
    probe = torch.rand(B, K + 1, generator=g)
    return CreditBatch(
        rewards_BK=rewards,
        turn_mask_BK=mask,
        outcome_B=rewards.sum(1),
        group_B=torch.arange(B) // group_size,
        state_BK=torch.where(mask, state, -1),
        node_BK=torch.where(mask, node, -1),
        terminated_B=~trunc,
        truncated_B=trunc,
        token_turn_BT=tt,
        loss_mask_BT=loss,
        logprobs_BT=torch.where(is_act, -2 * torch.rand(B, T, generator=g), 0.0),
        probe_BK1=probe,
        values_BK=torch.rand(B, K, generator=g),
        token_values_BT=torch.rand(B, T, generator=g),
        greedy_return_B=torch.rand(B, generator=g) * K / 2,
    )


def head(batch: CreditBatch, m: int) -> CreditBatch:
    """The first m episodes (every tensor sliced on its batch dimension)."""
    import dataclasses

    return dataclasses.replace(
        batch,
        **{f.name: getattr(batch, f.name)[:m] for f in dataclasses.fields(batch) if isinstance(getattr(batch, f.name), torch.Tensor)},
    )


@dataclass(frozen=True)
class BenchRow:
    label: str
    vectorized_s: float
    loop_s_scaled: float
    gpu_s: float | None

    @property
    def ratio(self) -> float:
        return self.loop_s_scaled / max(self.vectorized_s, 1e-12)


def _timed(fn: Any, sync: bool = False, repeat: int = 2) -> float:
    """Best of `repeat` wall-clock runs (the machine may be shared)."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def run(
    B: int, K: int, T: int, estimators: str = "all", loop_episodes: int = 256, seed: int = 0, gpu: bool = True
) -> list[BenchRow]:
    """Time every selected case (best of two runs each, vectorised and loop); returns the rows."""
    wanted = None if estimators == "all" else {s.strip() for s in estimators.split(",")}
    cases = [c for c in BENCH_CASES if wanted is None or c[0] in wanted or c[1] in wanted]
    cases += [(n, n, {}) for n in sorted(wanted or ()) if n in ESTIMATORS and all(n != c[0] for c in cases)]
    batch = synthetic_batch(B, K, T, seed)
    small = head(batch, min(loop_episodes, B))
    on_gpu = batch.to("cuda") if gpu and torch.cuda.is_available() else None
    rows = []
    for label, name, cfg in cases:
        compute(name, small, **cfg)  # warm-up
        vec = _timed(lambda name=name, cfg=cfg: compute(name, batch, **cfg))
        loop = _timed(lambda name=name, cfg=cfg: REFERENCES[name](small, **cfg)) * B / small.B
        g_s = None
        if on_gpu is not None:
            compute(name, on_gpu, **cfg)
            g_s = _timed(lambda name=name, cfg=cfg: compute(name, on_gpu, **cfg), sync=True)
        rows.append(BenchRow(label, vec, loop, g_s))
        log.info("bench %s: vectorized %.3fs loop %.3fs", label, vec, loop)
    return rows


def main(
    B: int = 4096,
    K: int = 16,
    T: int = 8192,
    estimators: str = "all",
    loop_episodes: int = 256,
    seed: int = 0,
    threads: int = 1,
    gpu: bool = True,
) -> None:
    """Time every estimator (vectorised, CPU; and GPU when present) next to its loop reference."""
    if threads > 0:
        torch.set_num_threads(threads)
    rows = run(B, K, T, estimators, loop_episodes, seed, gpu)
    batch_note = f"B={B} K={K} T={T} ({B * T / 1e6:.1f}M token slots), torch threads={torch.get_num_threads()}"
    table = Table(title=f"creditgym credit estimators: {batch_note}")
    table.add_column("estimator")
    table.add_column("vectorized CPU s", justify="right")
    table.add_column(f"loop s (measured on {min(loop_episodes, B)} episodes, x{B / min(loop_episodes, B):g})", justify="right")
    table.add_column("loop / vectorized", justify="right")
    has_gpu = any(r.gpu_s is not None for r in rows)
    if has_gpu:
        table.add_column("vectorized GPU s", justify="right")
    for r in rows:
        cells = [r.label, f"{r.vectorized_s:.3f}", f"{r.loop_s_scaled:.2f}", f"{r.ratio:.0f}x"]
        if has_gpu:
            cells.append(f"{r.gpu_s:.4f}" if r.gpu_s is not None else "-")
        table.add_row(*cells)
    Console(width=max(100, Console().width)).print(table)
