"""Induction warm-up: teach a from-scratch model to copy before it sees any env text.

Answering a search question means copying names the model has never seen (the test world's
entities are disjoint from the train world's) from the question and the retrieved document. A
from-scratch decoder learns copying through *induction heads* (Olsson et al., "In-context Learning
and Induction Heads", arXiv 2209.11895): attend to the token after an earlier occurrence of the
current token and predict it. On env episodes alone the heads do not form within a CPU budget; on
the classic synthetic task they do within a few hundred steps: a random token sequence `x` followed
by itself, `x x`, with the loss on the second copy only. The sequences use the tokenizer's word
pieces (alphabetic, non-special tokens), which are what names are made of.

Numbers need more. A byte-level BPE writes a 7-digit operand as 7 single-digit tokens, and digits
repeat within a number (`3237354` has three 3s), so "copy the token after the previous occurrence"
is ambiguous: the head must match a longer prefix or track the position it copies from. Heads
formed on word pieces alone copy no digit string at all (exact 7-digit copies 0.00 after 2400 steps
on Tools' tiny model); `digit_fraction` draws that share of rows from the ten digit pieces instead
(docs/design-notes.md, "Digit copying for Tools").

    metrics = induction_warmup(policy.model, policy.tokenizer, InductionConfig(steps=900))
    metrics["copy_accuracy"]   # next-token accuracy on the second copy, about 1.0 once formed

With the quickstart's tiny model (h128, 2 layers) the loss sits near log(pieces) for about 600 steps
and then drops to ~0.1 within 200 (the induction phase change); 900 steps take about a minute on
one CPU core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["InductionConfig", "digit_piece_ids", "induction_warmup", "repeat_batch", "word_piece_ids"]


@dataclass(frozen=True)
class InductionConfig:
    """Budget of the warm-up (defaults: what forms the heads in the quickstart's tiny model)."""

    steps: int = 900
    """Optimizer steps (0 = off)."""
    batch_size: int = 32
    min_len: int = 8
    """Shortest random sequence (copied once, so rows are 2 * len tokens)."""
    max_len: int = 24
    lr: float = 1e-3
    """AdamW learning rate (3e-3 delays the phase change past 900 steps in our runs)."""
    max_grad_norm: float = 1.0
    seed: int = 0
    digit_fraction: float = 0.0
    """Share of rows drawn from the single-digit pieces `0`-`9` instead of word pieces (0 = none):
    for envs whose actions copy long numbers (Tools' arithmetic operands)."""


def word_piece_ids(tokenizer: Any) -> list[int]:
    """Ids of the tokenizer's non-special pieces that decode to ASCII letters (a leading space allowed)."""
    special = set(tokenizer.all_special_ids)
    out = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i]) if i not in special else ""
        word = text[1:] if text.startswith(" ") else text
        if word.isascii() and word.isalpha():
            out.append(i)
    if len(out) < 2:
        raise ValueError("induction warm-up: the tokenizer has fewer than 2 alphabetic pieces; train it on text first")
    return out


def digit_piece_ids(tokenizer: Any) -> list[int]:
    """Ids of the ten single-digit pieces `0`-`9` (what byte-level BPE splits unseen numbers into)."""
    out = []
    for d in "0123456789":
        ids = tokenizer.encode(d, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"induction warm-up: the tokenizer has no single piece for the digit {d!r}")
        out.append(ids[0])
    return out


def repeat_batch(pieces_V: torch.Tensor, batch_size: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """`[B, 2*length]` rows `x x` with `x` drawn uniformly (with replacement) from `pieces_V`."""
    x_BN = pieces_V[torch.randint(len(pieces_V), (batch_size, length), generator=gen)]
    return torch.cat([x_BN, x_BN], dim=1)


def induction_warmup(model: torch.nn.Module, tokenizer: Any, config: InductionConfig | None = None) -> dict[str, float]:
    """Train `model` (a causal LM returning `.logits`) in place on `x x` copy rows.

    Returns the last step's `copy_loss` (mean cross-entropy on the second copy, positions after its
    first token, which cannot be inferred) and `copy_accuracy`, and `steps`.
    """
    cfg = config or InductionConfig()
    if cfg.steps <= 0:
        return {"steps": 0.0, "copy_loss": float("nan"), "copy_accuracy": float("nan")}
    if not 1 <= cfg.min_len <= cfg.max_len:
        raise ValueError(f"induction warm-up: need 1 <= min_len <= max_len, got {cfg.min_len}, {cfg.max_len}")
    if not 0.0 <= cfg.digit_fraction <= 1.0:
        raise ValueError(f"induction warm-up: digit_fraction is a share of rows in [0, 1], got {cfg.digit_fraction}")
    pieces_V = torch.tensor(word_piece_ids(tokenizer))
    digits_V = torch.tensor(digit_piece_ids(tokenizer)) if cfg.digit_fraction > 0 else pieces_V
    gen = torch.Generator().manual_seed(int(cfg.seed))
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    was_training = model.training
    model.train()
    loss_val, acc_val = float("nan"), float("nan")
    try:
        for _ in range(cfg.steps):
            n = int(torch.randint(cfg.min_len, cfg.max_len + 1, (1,), generator=gen))
            # a whole batch of digit rows or of word rows; no coin drawn at 0, so old runs replay exactly
            digits = cfg.digit_fraction > 0 and float(torch.rand((), generator=gen)) < cfg.digit_fraction
            ids_BT = repeat_batch(digits_V if digits else pieces_V, cfg.batch_size, n, gen).to(device)
            logits_BNV = model(input_ids=ids_BT).logits[:, n:-1]
            target_BN = ids_BT[:, n + 1 :]
            loss = torch.nn.functional.cross_entropy(logits_BNV.reshape(-1, logits_BNV.shape[-1]), target_BN.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            loss_val = float(loss.detach())
            acc_val = float((logits_BNV.detach().argmax(-1) == target_BN).float().mean())
    finally:
        model.train(was_training)
    return {"steps": float(cfg.steps), "copy_loss": loss_val, "copy_accuracy": acc_val}
