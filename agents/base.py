"""The Policy protocol and the data it exchanges with the Collector (ARCHITECTURE.md, "Policies").

Logprob semantics, for every backend: `log_softmax(logits / temperature)` over the full vocabulary
at the sampled token, without top-p/top-k renormalisation. Temperature 0 means greedy decoding with
logprobs recorded at temperature 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["Context", "Generation", "Policy", "Sampling", "Tokenizer", "TrainablePolicy", "WeightSyncedGenerator", "cut_at_stop"]


@dataclass
class Context:
    """The conversation so far, as the Collector built it.

    `ids`: the exact token ids of the conversation (what a model continues); `messages`: the same
    conversation as chat messages (for message-based backends); `obs_texts` / `action_texts`: the
    raw env observations (reset observation first) and actions exactly as the env saw them (what
    scripted and random policies read); `role`: whose turn it is in two-player envs; `prefill`: text
    the Collector has already put at the start of the reply (its tokens end `ids`; the policy continues
    it; message-based backends must continue `prefill` rather than start a new assistant turn).
    """

    ids: list[int] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    obs_texts: list[str] = field(default_factory=list)
    action_texts: list[str] = field(default_factory=list)
    role: str = "agent"
    env_id: str = ""
    prefill: str = ""


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
    """Everything a trainer calls on the policy it trains (HFPolicy; `tiny.build` and
    `pretrained.load` return one). Trainers call these methods and nothing else: no signature
    sniffing, no `hasattr` probes. A policy without them (ScriptedPolicy, OpenAIPolicy, VLLMPolicy)
    is not trainable; the trainers refuse it by this protocol (`isinstance(p, TrainablePolicy)`).

    Every logits and logprob method follows the module docstring's logprob semantics; the shared
    math is `creditgym.agents.logprobs` (full, masked and selected log-probabilities)."""

    model: torch.nn.Module
    """The `nn.Module` the optimiser trains, LoRA adapters included."""

    @property
    def has_adapter(self) -> bool:
        """True once LoRA adapters wrap the model (then `reference()` needs no copy of the weights)."""
        ...

    def base_model(self) -> torch.nn.Module:
        """The model without its LoRA wrapper (PPO's critic copies or shares this network)."""
        ...

    def forward_logits(
        self, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, logits_to_keep: int = 0
    ) -> torch.Tensor:
        """Logits `[B, T, V]` of a teacher-forced pass with gradients; `logits_to_keep=k > 0` returns
        only the last k positions `[B, k, V]` (TRL's `logits_to_keep`: the LM head skips the rest)."""
        ...

    def forward_logits_at(
        self, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, positions_BT: torch.Tensor
    ) -> torch.Tensor:
        """Logits `[N, V]` at the N True positions of `positions_BT` (row-major), equal to
        `forward_logits(ids_BT, attention_mask_BT)[positions_BT]`, the LM head run there only."""
        ...

    @property
    def hidden_size(self) -> int:
        """Width D of the last hidden layer (`forward_hidden_at`'s `hidden_BTD`; heads on it are D wide)."""
        ...

    def forward_hidden_at(
        self, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, positions_BT: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(logits_NV, hidden_BTD)` of one teacher-forced pass with gradients: the logits at the True
        positions of `positions_BT` (as `forward_logits_at`) and the last hidden layer at every position
        (FlowRL's log-partition head reads the prompt's)."""
        ...

    def logprobs(
        self,
        ids_BT: torch.Tensor,
        attention_mask_BT: torch.Tensor,
        temperature: float = 1.0,
        grad: bool = False,
        mask_BT: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Log-probability `[B, T]` of each token given its prefix; with `mask_BT` only on the mask
        (0 elsewhere, the LM head run there only); `grad=False` runs without gradients, chunked."""
        ...

    def reference(self) -> AbstractContextManager[Any]:
        """A block inside which the policy is its own KL reference: the base model, adapters off
        (raises when `has_adapter` is False: the trainer then keeps a frozen copy)."""
        ...

    def add_lora(
        self, r: int = 8, alpha: int = 16, dropout: float = 0.0, target_modules: Sequence[str] | None = None
    ) -> Any:
        """Wrap the model in a peft LoRA adapter; only adapter weights stay trainable."""
        ...

    def save(self, path: str | Path) -> Path:
        """Write the model and tokenizer as a Hugging Face folder."""
        ...


@runtime_checkable
class WeightSyncedGenerator(Policy, Protocol):
    """A trainer's `generator=`: samples the episodes, and after each update takes the trained
    policy's weights (VLLMPolicy: into the running engine; HFPolicy: a second copy)."""

    def sync_from(self, policy: TrainablePolicy) -> Any: ...


def cut_at_stop(ids: list[int], stops: Sequence[str], decode: Callable[[list[int]], str]) -> tuple[list[int], str]:
    """The shortest prefix of `ids` whose decoded text holds one of `stops`, and that text; `ids` whole
    when none occurs. For generation backends that return tokens without applying the env's stop
    strings (TRL's, verl's server manager), cut client-side as vLLM would."""
    text = decode(ids)
    if not any(s in text for s in stops):
        return ids, text
    for n in range(1, len(ids) + 1):
        t = decode(ids[:n])
        if any(s in t for s in stops):
            return ids[:n], t
    return ids, text
