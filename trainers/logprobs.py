"""Teacher-forced log-probabilities for the losses: micro-batching rows and calling the policy.

Every call goes through the `TrainablePolicy` protocol (agents/base.py); the log-probability math
itself is `creditgym.agents.logprobs`, shared with the backends.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from creditgym.agents.base import TrainablePolicy
from creditgym.agents.logprobs import masked_logprobs, token_logprobs
from creditgym.batch import CreditBatch
from creditgym.trainers.losses import entropy_from_logits

__all__ = ["first_loss_position", "forward_logprobs", "micro_batches", "row_lengths", "row_logprobs"]


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


def first_loss_position(mask_BT: torch.Tensor) -> int:
    """The first column where any row of `mask_BT` is True (0 when none is): `forward_logprobs`'s
    `start` for a loss that reads only masked positions."""
    cols = mask_BT.any(dim=0).nonzero()
    return int(cols[0]) if cols.numel() else 0


def forward_logprobs(
    policy: TrainablePolicy,
    ids_BT: torch.Tensor,
    attention_mask_BT: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    start: int = 0,
    mask_BT: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Teacher-forced `logp_BT` (with grad if enabled; `out[b, t]` is the log-probability of token t
    given its prefix) and, optionally, the full-vocabulary entropy of the distribution that predicted
    each token (`H_BT[b, t]`, 0 at t = 0).

    `start > 0` (the first position any loss reads) computes the LM head only from position start - 1
    on (`forward_logits(..., logits_to_keep=)`); positions before `start` get 0. `mask_BT` (the
    positions the loss reads) computes the LM head only there (`forward_logits_at`); `logp_BT` and
    `H_BT` are then 0 off the mask (and at t = 0 or where token t or its predecessor is padding),
    equal to the full pass on the mask."""
    if mask_BT is not None:
        logp_BT, logits_NV, sel_BT = masked_logprobs(policy, ids_BT, attention_mask_BT, mask_BT, temperature)
        if not with_entropy:
            return logp_BT, None
        sel_BT = sel_BT.to(logits_NV.device)
        H_BT = torch.zeros(sel_BT.shape, dtype=torch.float32, device=logits_NV.device)
        return logp_BT, H_BT.masked_scatter(sel_BT, entropy_from_logits(logits_NV, temperature))
    T = int(ids_BT.shape[1])
    keep = T - min(int(start), T) + 1 if int(start) > 0 else 0
    logits_BKV = policy.forward_logits(ids_BT, attention_mask_BT, logits_to_keep=keep)
    off = T - int(logits_BKV.shape[1])
    dev = logits_BKV.device
    lp_BK = token_logprobs(logits_BKV, ids_BT[:, off:].to(dev), attention_mask_BT[:, off:].to(dev), temperature)
    logp_BT = torch.nn.functional.pad(lp_BK, (T - int(lp_BK.shape[1]), 0))  # left: the positions not computed
    if not with_entropy:
        return logp_BT, None
    H_BK = entropy_from_logits(logits_BKV[:, :-1], temperature)
    return logp_BT, torch.nn.functional.pad(H_BK, (T - int(H_BK.shape[1]), 0))


def row_logprobs(policy: TrainablePolicy, batch: CreditBatch, temperature: float, mask_BT: torch.Tensor) -> torch.Tensor:
    """`policy.logprobs` without gradients on the tokens `mask_BT`, run on the batch's row-token layout
    (the sequences the policy saw: one row per episode, or per turn for a per-turn history) and mapped
    back to the episode layout `[B, T]` (0 off the mask and on tokens no row holds)."""
    ids_RT, attn_RT = batch.row_inputs()
    lp_RT = policy.logprobs(ids_RT, attn_RT, temperature, mask_BT=batch.to_rows(mask_BT.bool(), False))
    return batch.from_rows(lp_RT.detach())
