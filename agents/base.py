"""The Policy protocol and the data it exchanges with the Collector (ARCHITECTURE.md, "Policies").

Logprob semantics, for every backend: `log_softmax(logits / temperature)` over the full vocabulary
at the sampled token, without top-p/top-k renormalisation. Temperature 0 means greedy decoding with
logprobs recorded at temperature 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["Context", "Generation", "Policy", "Sampling", "Tokenizer", "TrainablePolicy"]


@dataclass
class Context:
    """The conversation so far, as the Collector built it.

    `ids`: the exact token ids of the conversation (what a model continues); `messages`: the same
    conversation as chat messages (for message-based backends); `obs_texts` / `action_texts`: the
    raw env observations (reset observation first) and actions exactly as the env saw them (what
    scripted and random policies read); `role`: whose turn it is in two-player envs.
    """

    ids: list[int] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    obs_texts: list[str] = field(default_factory=list)
    action_texts: list[str] = field(default_factory=list)
    role: str = "agent"
    env_id: str = ""


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. `top_k=0` and `top_p=1.0` disable those filters; `temperature=0` is greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Generation:
    """One sampled continuation: its token ids, their logprobs (see module docstring), the decoded
    text, and why it ended (`"stop"` on a stop string or EOS, `"length"` at max_new_tokens)."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    text: str
    finish_reason: str = "stop"


@runtime_checkable
class Tokenizer(Protocol):
    """The Hugging Face subset the Collector uses."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: Any, skip_special_tokens: bool = ...) -> str: ...

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any: ...


@runtime_checkable
class Policy(Protocol):
    """What the Collector needs from a policy."""

    tokenizer: Any

    def generate(self, contexts: list[Context], sampling: Sampling) -> list[Generation]: ...


@runtime_checkable
class TrainablePolicy(Policy, Protocol):
    """What trainers need beyond the Policy protocol."""

    model: torch.nn.Module

    def forward_logits(self, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor) -> torch.Tensor: ...

    def logprobs(
        self, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, temperature: float = 1.0, grad: bool = False
    ) -> torch.Tensor: ...
