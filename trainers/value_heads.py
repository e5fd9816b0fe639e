"""Critics on frozen features, shared by DigiRL (METHODS.md 6) and Digi-Q (METHODS.md 7).

A state (or state-action) is the token sequence the policy saw; its feature is the mean over those
tokens of one hidden layer of a frozen causal LM (`pooled_features`). Small MLP heads (`MLPHead`)
read the features: DigiRL's instruction and step values are classifiers (`fit_binary`), Digi-Q's
Q and V heads regress TD targets with Polyak-averaged target copies (`polyak_`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from creditgym.trainers.logprobs import micro_batches
from creditgym.trajectory import Episode

__all__ = ["MLPHead", "binary_auc", "final_prompt_ids", "fit_binary", "pooled_features", "polyak_", "prompt_ids", "state_sequences"]


def prompt_ids(ep: Episode, k: int) -> list[int]:
    """The tokens turn k's action was sampled from: its own prompt (`obs_ids`) with a per-turn history,
    the whole conversation so far with the `full` history."""
    if ep.per_turn_rows:
        return list(ep.turns[k].obs_ids)
    out: list[int] = []
    for t in ep.turns[:k]:
        out += [*t.obs_ids, *t.action_ids]
    return out + list(ep.turns[k].obs_ids)


def final_prompt_ids(ep: Episode) -> list[int]:
    """The state after the last step (what a truncated episode bootstraps from)."""
    if ep.per_turn_rows:
        return list(ep.final_obs_ids) or list(ep.turns[-1].obs_ids)
    out: list[int] = []
    for t in ep.turns:
        out += [*t.obs_ids, *t.action_ids]
    return out + list(ep.final_obs_ids)


def state_sequences(ep: Episode) -> list[list[int]]:
    """The token sequences of `ep`'s states a critic values: before each turn, then after the last."""
    return [prompt_ids(ep, k) for k in range(ep.num_turns)] + [final_prompt_ids(ep)]


@torch.no_grad()
def pooled_features(
    model: torch.nn.Module, seqs: Sequence[Sequence[int]], token_budget: int = 8192, layer: int = -1
) -> torch.Tensor:
    """`[N, H]` float32 (on CPU): per sequence, the mean over its tokens of hidden layer `layer` of the
    causal LM `model` (no gradients; the model is put in eval mode). Empty sequences raise."""
    if any(len(s) == 0 for s in seqs):
        raise ValueError("pooled_features: an empty token sequence has no feature; drop it or give it a prompt")
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    lengths = [len(s) for s in seqs]
    out: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    try:
        for rows in micro_batches(lengths, token_budget):
            T = max(lengths[i] for i in rows)
            ids = torch.zeros(len(rows), T, dtype=torch.long)
            attn = torch.zeros(len(rows), T, dtype=torch.long)
            for j, i in enumerate(rows):
                ids[j, : lengths[i]] = torch.tensor(list(seqs[i]), dtype=torch.long)
                attn[j, : lengths[i]] = 1
            hs = model(input_ids=ids.to(dev), attention_mask=attn.to(dev), output_hidden_states=True).hidden_states[layer]
            m = attn.to(dev).unsqueeze(-1).to(hs.dtype)
            pooled = ((hs * m).sum(1) / m.sum(1)).float().cpu()
            for j, i in enumerate(rows):
                out[i] = pooled[j]
    finally:
        model.train(was_training)
    return torch.stack(out) if out else torch.zeros(0, 0)


class MLPHead(torch.nn.Module):
    """`Linear(d, hidden) -> ReLU -> Linear(hidden, out)` on standardised features (mean and scale
    fixed at construction from the data it will read, so heads on raw LM features train quickly)."""

    def __init__(self, d_in: int, hidden: int = 128, out: int = 1, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) / (p.shape[-1] ** 0.5))
        self.register_buffer("mu", torch.zeros(d_in))
        self.register_buffer("sd", torch.ones(d_in))

    def set_scale(self, X_ND: torch.Tensor) -> None:
        """Standardise inputs by the mean and standard deviation of `X_ND` (per feature)."""
        with torch.no_grad():
            self.mu.copy_(X_ND.mean(0))
            self.sd.copy_(X_ND.std(0, unbiased=False).clamp(min=1e-6))

    def forward(self, X_ND: torch.Tensor) -> torch.Tensor:
        return self.net((X_ND - self.mu) / self.sd)


def fit_binary(
    head: MLPHead,
    optimizer: torch.optim.Optimizer,
    X_ND: torch.Tensor,
    y_N: torch.Tensor,
    epochs: int,
    batch_size: int,
    gen: torch.Generator,
) -> float:
    """Cross-entropy on 0/1 targets (the head's logits, one column per output, each trained on `y_N`),
    minibatches drawn with `gen`; returns the last epoch's mean loss."""
    N = int(X_ND.shape[0])
    if N == 0:
        return 0.0
    last = 0.0
    for _ in range(epochs):
        perm = torch.randperm(N, generator=gen)
        total = 0.0
        for s in range(0, N, batch_size):
            idx = perm[s : s + batch_size]
            logits_NO = head(X_ND[idx])
            y = y_N[idx].float()[:, None].expand_as(logits_NO)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits_NO, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        last = total / N
    return last


@torch.no_grad()
def polyak_(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    """`target <- tau * online + (1 - tau) * target`, in place (Polyak averaging of TD targets)."""
    for pt, po in zip(target.parameters(), online.parameters(), strict=True):
        pt.mul_(1.0 - tau).add_(po, alpha=tau)


def binary_auc(scores_N: torch.Tensor, labels_N: torch.Tensor) -> float:
    """Area under the ROC curve: the probability a positive scores above a negative (ties count 1/2);
    NaN when either class is missing."""
    pos, neg = scores_N[labels_N.bool()], scores_N[~labels_N.bool()]
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())
