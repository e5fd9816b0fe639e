"""Discounted return-to-go and suffix minimum along the turn axis (CREDIT.md 10), with the loop twin."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["discount_matrix", "rtg", "rtg_loop", "suffix_min"]


def discount_matrix(K: int, gamma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """`D[k, j] = gamma^(j-k)` for j >= k, else 0 (CREDIT.md 10)."""
    k = torch.arange(K, device=device)
    diff = (k[None, :] - k[:, None]).to(dtype)
    D = torch.pow(torch.tensor(gamma, dtype=dtype, device=device), diff.clamp(min=0))
    return torch.where(diff >= 0, D, torch.zeros_like(D))


def rtg(x_BK: Tensor, gamma: float) -> Tensor:
    """Discounted return-to-go `RTG_g(x)[b,k] = sum_{j>=k} g^(j-k) x[b,j]` (padding must be 0)."""
    D = discount_matrix(x_BK.shape[1], gamma, x_BK.dtype, x_BK.device)
    return x_BK @ D.T


def rtg_loop(xs: list[float], gamma: float) -> list[float]:
    """`rtg` of one episode's list by a backward loop."""
    out, acc = [0.0] * len(xs), 0.0
    for k in range(len(xs) - 1, -1, -1):
        acc = xs[k] + gamma * acc
        out[k] = acc
    return out


def suffix_min(x_BK: Tensor, mask_BK: Tensor) -> Tensor:
    """`min_{j=k}^{n_b-1} x[b,j]` at valid slots (0 at padding): flip, cummin, flip."""
    inf = torch.full_like(x_BK, float("inf"))
    y = torch.where(mask_BK, x_BK, inf).flip(1).cummin(1).values.flip(1)
    return torch.where(mask_BK, y, torch.zeros_like(y))
