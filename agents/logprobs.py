"""Teacher-forced log-probabilities from logits: the one definition every backend and trainer uses.

`out[b, t] = log_softmax(logits[b, t-1] / temperature)[ids[b, t]]` over the full vocabulary
(ARCHITECTURE.md "Logprob semantics"), 0 where token t or its predecessor is padding and at t = 0
(no prefix); temperature 0 counts as 1. `token_logprobs` reads full `[B, T, V]` logits;
`select_positions` + `selected_logprobs` (and `masked_logprobs`, which runs a policy's
`forward_logits_at`) compute the same values on the positions a loss reads only.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["masked_logprobs", "select_positions", "selected_logprobs", "token_logprobs"]


def _temperature(temperature: float) -> float:
    return float(temperature) if temperature and temperature > 0 else 1.0


def token_logprobs(
    logits_BTV: torch.Tensor, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """`out[b, t] = log_softmax(logits[b, t-1] / temperature)[ids[b, t]]`, 0 where token t or its
    predecessor is padding (the first real token has no prefix). Temperature 0 counts as 1."""
    scaled_BTV = logits_BTV[:, :-1].float() / _temperature(temperature)
    picked_BT = scaled_BTV.gather(-1, ids_BT[:, 1:, None].long()).squeeze(-1)
    lp_BT = picked_BT - torch.logsumexp(scaled_BTV, dim=-1)
    mask_BT = (attention_mask_BT[:, 1:] > 0) & (attention_mask_BT[:, :-1] > 0)
    lp_BT = torch.where(mask_BT, lp_BT, torch.zeros_like(lp_BT))
    return torch.cat([torch.zeros_like(lp_BT[:, :1]), lp_BT], dim=1)


def select_positions(mask_BT: torch.Tensor, attention_mask_BT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a loss that reads tokens `mask_BT`: `sel_BT` (the tokens whose logprob is defined: masked,
    not padding, with a real predecessor, t > 0) and `pos_BT` (the positions whose logits predict
    them: `pos[b, t - 1] = sel[b, t]`). Boolean indexing with either gives the same row-major order."""
    attn_BT = attention_mask_BT > 0
    sel_BT = mask_BT.to(attn_BT.device).bool() & attn_BT
    sel_BT[:, 1:] &= attn_BT[:, :-1]
    sel_BT[:, 0] = False  # the first token has no prefix
    pos_BT = torch.zeros_like(sel_BT)
    pos_BT[:, :-1] = sel_BT[:, 1:]
    return sel_BT, pos_BT


def selected_logprobs(
    logits_NV: torch.Tensor, ids_BT: torch.Tensor, sel_BT: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """`token_logprobs` at the tokens `sel_BT` only, from the logits at their `pos_BT` (see
    `select_positions`): `[B, T]` float32, 0 off `sel_BT`."""
    dev = logits_NV.device
    sel_BT = sel_BT.to(dev)
    scaled_NV = logits_NV.float() / _temperature(temperature)
    target_N = ids_BT.to(dev)[sel_BT].long()
    lp_N = scaled_NV.gather(-1, target_N[:, None]).squeeze(-1) - torch.logsumexp(scaled_NV, dim=-1)
    return torch.zeros(sel_BT.shape, dtype=torch.float32, device=dev).masked_scatter(sel_BT, lp_N)


def masked_logprobs(
    policy: Any, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, mask_BT: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(logp_BT, logits_NV, sel_BT)`: the log-probabilities on the mask (0 elsewhere) from the LM head
    run only there (`policy.forward_logits_at`, TrainablePolicy), the logits it computed (for an
    entropy) and the tokens they predict. Gradients flow when enabled."""
    sel_BT, pos_BT = select_positions(mask_BT, attention_mask_BT)
    logits_NV = policy.forward_logits_at(ids_BT, attention_mask_BT, pos_BT)
    return selected_logprobs(logits_NV, ids_BT, sel_BT, temperature), logits_NV, sel_BT
