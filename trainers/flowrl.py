"""FlowRL: the flow-balance objective of `GRPOConfig(objective="flowrl")` (design/METHODS.md 2).

Paper: "FlowRL: Matching Reward Distributions for LLM Reasoning", arXiv 2509.15207 (code:
Xuekai-Zhu/FlowRL). Minimising the reverse KL from the policy to the reward-tilted target
`pi_ref(y|x) * exp(beta * r(x, y)) / Z(x)` equals, in expected gradient, a squared trajectory-balance
residual. Per episode b, over its trainable action tokens y_b (all turns), with x_b its reset
observation:

    delta_b = logZ(x_b) + (1/|y_b|) sum_t logp  -  beta * rhat_b  -  (1/|y_b|) sum_t ref
    w_b     = clip(exp(sum_t (logp - old)), 1 - eps, 1 + eps)                 (detached)
    L_flow  = (1/|B+|) sum_b w_b * delta_b^2

rhat_b is the episode's mean token advantage (the group-normalised return under `grpo`: reward
scaling by beta), the two means are the length normalisation, w_b the clipped importance weight.
logZ is `LogZHead`, an MLP on the policy's last hidden layer mean-pooled over the prompt. The trainer
holds one head per trained policy, beside the policy (never inside it): it is optimised with the
policy, checkpointed with the trainer, trainable under LoRA, and never sent to a generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from creditgym.agents.base import TrainablePolicy
from creditgym.agents.logprobs import select_positions, selected_logprobs

__all__ = [
    "IS_CLIP_MODES",
    "FlowObjective",
    "LogZHead",
    "check_config",
    "episode_mean",
    "flowrl_forward",
    "flowrl_loss",
    "importance_weights",
    "prompt_mask",
    "with_head",
]

IS_CLIP_MODES = ("paper", "max10", "none")
"""How w_b is bounded: the paper's [1 - eps, 1 + eps]; an older release's upper clamp at 10; none."""
_LOG_RATIO_CLAMP = 20.0  # overflow guard on sum_t (logp - old), as losses.ratio_from_logprobs


class SeededDropout(nn.Module):
    """Dropout whose masks come from the owning head's `torch.Generator` (so runs and resumes repeat)."""

    def __init__(self, p: float, generator: torch.Generator):
        super().__init__()
        self.p = float(p)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator) >= self.p
        return x * keep.to(device=x.device, dtype=x.dtype) / (1.0 - self.p)


class LogZHead(nn.Module):
    """The log-partition estimate logZ(x): the prompt's last-layer hidden states, mean-pooled, through
    `layers - 1` blocks of [Linear(d, d), GELU, LayerNorm, Dropout] and a final Linear(d, 1) (the
    release's 3-layer head has two blocks). Weights start as PyTorch's Linear default, drawn from a
    generator seeded with `seed`; dropout masks come from the same generator."""

    def __init__(self, hidden_size: int, layers: int = 3, dropout: float = 0.1, seed: int = 0):
        super().__init__()
        if layers < 1:
            raise ValueError(f"logz_layers must be >= 1 (the release uses 3), got {layers}")
        self.generator = torch.Generator().manual_seed(int(seed))
        d = int(hidden_size)
        blocks: list[nn.Module] = []
        for _ in range(layers - 1):
            blocks += [nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), SeededDropout(dropout, self.generator)]
        self.mlp = nn.Sequential(*blocks, nn.Linear(d, 1))
        with torch.no_grad():
            for m in self.mlp.modules():
                if isinstance(m, nn.Linear):
                    bound = 1.0 / math.sqrt(m.in_features)
                    m.weight.uniform_(-bound, bound, generator=self.generator)
                    m.bias.uniform_(-bound, bound, generator=self.generator)

    def forward(self, hidden_BTD: torch.Tensor, prompt_BT: torch.Tensor) -> torch.Tensor:
        """logZ `[B]` from hidden states `[B, T, D]` mean-pooled over the prompt tokens `prompt_BT`."""
        p = next(self.parameters())
        m_BT1 = prompt_BT.to(device=hidden_BTD.device, dtype=torch.float32)[..., None]
        pooled_BD = (hidden_BTD.float() * m_BT1).sum(1) / m_BT1.sum(1).clamp_min(1.0)
        return self.mlp(pooled_BD.to(device=p.device, dtype=p.dtype)).squeeze(-1)

    def checkpoint(self) -> dict:
        """Weights and the dropout generator's state (a trainer's checkpoint holds this)."""
        return {
            "weights": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "rng": self.generator.get_state(),
        }

    def restore(self, state: dict) -> None:
        """Load what `checkpoint` wrote."""
        self.load_state_dict(state["weights"])
        self.generator.set_state(state["rng"])


@dataclass
class FlowObjective:
    """What `update.policy_update` needs to train one role with FlowRL: its head and the loss knobs."""

    head: LogZHead
    beta: float = 15.0
    """Reward scale (the paper's 15)."""
    is_eps: float = 0.2
    """Importance-weight clip of the "paper" mode."""
    is_clip: str = "paper"
    """One of IS_CLIP_MODES."""


def prompt_mask(token_turn_BT: torch.Tensor, attention_mask_BT: torch.Tensor) -> torch.Tensor:
    """The prompt of each row: its attended tokens before its first action token (`token_turn >= 0`);
    every attended token of a row without one."""
    T = token_turn_BT.shape[1]
    action_BT = token_turn_BT >= 0
    first_B = torch.where(
        action_BT.any(1),
        action_BT.to(torch.int64).argmax(1),
        torch.full_like(action_BT[:, 0], T, dtype=torch.int64),
    )
    before_BT = torch.arange(T, device=token_turn_BT.device)[None, :] < first_B[:, None]
    return before_BT & (attention_mask_BT > 0)


def episode_mean(x_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over each row's masked tokens (0 for a row without any): rhat_b from token advantages."""
    m = mask_BT.to(x_BT.dtype)
    return (x_BT * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def importance_weights(
    logp_BT: torch.Tensor, old_BT: torch.Tensor, mask_BT: torch.Tensor, eps: float = 0.2, mode: str = "paper"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached sequence weights `w_B` = exp(sum_t M (logp - old)) bounded as `mode` says ("paper":
    clip to [1 - eps, 1 + eps]; "max10": at most 10; "none": unbounded), and where the bound acted."""
    if mode not in IS_CLIP_MODES:
        raise ValueError(f"unknown flowrl_is_clip {mode!r}; choose one of {IS_CLIP_MODES}")
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"flowrl_is_eps must be in [0, 1) (the paper uses 0.2), got {eps}")
    m = mask_BT.to(logp_BT.dtype)
    raw_B = torch.exp(
        torch.clamp(((logp_BT - old_BT).detach() * m).sum(-1), -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    )
    if mode == "paper":
        w_B = raw_B.clamp(1.0 - eps, 1.0 + eps)
    elif mode == "max10":
        w_B = raw_B.clamp(max=10.0)
    else:
        w_B = raw_B
    return w_B, w_B != raw_B


def flowrl_loss(
    logz_B: torch.Tensor,
    logp_BT: torch.Tensor,
    old_BT: torch.Tensor,
    ref_BT: torch.Tensor,
    rhat_B: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    beta: float = 15.0,
    is_eps: float = 0.2,
    is_clip: str = "paper",
    weight_B: torch.Tensor | None = None,
    denom: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The flow-balance loss (module docstring; arXiv 2509.15207) and its metrics. `weight_B` (detached)
    multiplies w_b (TIS between generator and trainer, METHODS.md 1.8); `denom` is |B+| of the whole
    mini-batch for micro-batching (default: this batch's). Episodes without a trainable token add 0."""
    m = mask_BT.to(logp_BT.dtype)
    n_B = m.sum(-1)
    has_B = n_B > 0
    delta_B = (
        logz_B.to(logp_BT.dtype)
        + (logp_BT * m).sum(-1) / n_B.clamp_min(1.0)
        - beta * rhat_B.to(logp_BT.dtype)
        - (ref_BT.to(logp_BT.dtype) * m).sum(-1) / n_B.clamp_min(1.0)
    )
    w_B, clipped_B = importance_weights(logp_BT, old_BT, mask_BT, is_eps, is_clip)
    if weight_B is not None:
        w_B = w_B * weight_B.detach().to(w_B.dtype)
    count = float(has_B.sum()) if denom is None else float(denom)
    loss = (w_B * delta_B.square() * has_B).sum() / max(count, 1.0)
    with torch.no_grad():
        n = max(int(has_B.sum()), 1)
        metrics = {
            "flowrl/logz": float((logz_B.detach() * has_B).sum()) / n,
            "flowrl/delta_abs": float((delta_B.detach().abs() * has_B).sum()) / n,
            "flowrl/is_weight": float((w_B * has_B).sum()) / n,
            "flowrl/is_clipfrac": float((clipped_B & has_B).sum()) / n,
        }
    return loss, metrics


def flowrl_forward(
    policy: TrainablePolicy,
    head: LogZHead,
    ids_BT: torch.Tensor,
    attention_mask_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    prompt_BT: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass with gradients: `logp_BT` on the tokens `mask_BT` (0 elsewhere, as
    `agents.logprobs.masked_logprobs`) and `logz_B` from the hidden states of the prompt `prompt_BT`."""
    sel_BT, pos_BT = select_positions(mask_BT, attention_mask_BT)
    logits_NV, hidden_BTD = policy.forward_hidden_at(ids_BT, attention_mask_BT, pos_BT)
    return selected_logprobs(logits_NV, ids_BT, sel_BT, temperature), head(hidden_BTD, prompt_BT)


def check_config(cfg: Any) -> None:
    """Refuse GRPOConfig knobs FlowRL's loss does not read (their silent neglect would change results)."""
    if cfg.flowrl_is_clip not in IS_CLIP_MODES:
        raise ValueError(f"unknown flowrl_is_clip {cfg.flowrl_is_clip!r}; choose one of {IS_CLIP_MODES}")
    if not 0.0 <= cfg.flowrl_is_eps < 1.0:
        raise ValueError(f"flowrl_is_eps must be in [0, 1) (the paper uses 0.2), got {cfg.flowrl_is_eps}")
    if cfg.logz_layers < 1:
        raise ValueError(f"logz_layers must be >= 1 (the release uses 3), got {cfg.logz_layers}")
    unread = {"kl_coef": cfg.kl_coef != 0, "entropy_coef": cfg.entropy_coef != 0, "per_turn_clip": cfg.per_turn_clip,
              "dual_clip_c": cfg.dual_clip_c is not None}  # fmt: skip
    if any(unread.values()):
        names = ", ".join(k for k, v in unread.items() if v)
        raise ValueError(f"objective='flowrl' has its own reference term and no clipped surrogate; {names} would be "
                         "ignored: leave them at their defaults (kl_coef=0, entropy_coef=0, no per-turn or dual clip)")  # fmt: skip


def with_head(model: nn.Module, head: LogZHead | None) -> nn.Module:
    """The modules one optimizer trains: the policy's model, and its logZ head under FlowRL."""
    return model if head is None else nn.ModuleList([model, head])
