"""What the policy sees each turn (the history policy) and how many tokens it may see (the budget).

History policies (docs/collector.md, "History"):

* `"full"`: the growing conversation, every observation and action so far (one training row per
  episode).
* `"window"` / `{"mode": "window", "k": k}` / `"window:k"`: a fresh prompt each turn holding the
  reset observation (the task or goal), the last `k` actions and the current observation, as device
  agents are fed in DigiRL (arXiv 2406.11896) and verl-agent's GiGPO (arXiv 2505.10978). Each turn
  is its own prompt, so each turn is its own training row.
* a callable `fn(obs_texts, action_texts) -> list[message]`: the chat messages of the prompt for the
  next action, from the raw observations so far (reset observation first) and the actions so far
  (one fewer); also one training row per turn.

An env declares its default in `metadata["history"]`; `Collector(history=...)` overrides it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from creditgym.trajectory import Episode

__all__ = [
    "DEFAULT_MAX_CONTEXT_TOKENS",
    "HistoryPolicy",
    "parse_history",
    "policy_context_length",
    "prompt_too_long",
    "report_truncation",
    "resolve_max_context",
    "window_messages",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_CONTEXT_TOKENS = 4096
"""The one context-length default (Collector, trainer configs, `evaluate`) for policies whose model
declares no context length of its own."""

HistoryFn = Callable[[list[str], list[str]], list[dict[str, Any]]]


@dataclass(frozen=True)
class HistoryPolicy:
    """A parsed history setting: `mode` is "full", "window" or "custom" (`fn` set)."""

    mode: str = "full"
    k: int = 1
    fn: HistoryFn | None = None

    @property
    def per_turn(self) -> bool:
        """True when each turn gets a fresh prompt (one training row per turn)."""
        return self.mode != "full"

    def describe(self) -> str:
        if self.mode == "window":
            return f"window:{self.k}"
        return "custom" if self.mode == "custom" else "full"

    def messages(self, obs_texts: Sequence[str], action_texts: Sequence[str]) -> list[dict[str, Any]]:
        """The prompt's chat messages for the next action (per-turn modes only)."""
        if self.fn is not None:
            out = self.fn(list(obs_texts), list(action_texts))
            if not isinstance(out, list) or not all(isinstance(m, dict) and "role" in m for m in out) or not out:
                raise TypeError(
                    "a history function must return a non-empty list of chat messages "
                    "([{'role': 'user', 'content': ...}, ...]); got " + repr(out)[:200]
                )
            return [dict(m) for m in out]
        return window_messages(obs_texts, action_texts, self.k)


def parse_history(spec: Any) -> HistoryPolicy:
    """A HistoryPolicy from `"full"`, `"window"`, `"window:k"`, `{"mode": "window", "k": k}`, a
    callable, or a HistoryPolicy. Anything else raises with the accepted forms."""
    if isinstance(spec, HistoryPolicy):
        return spec
    if callable(spec):
        return HistoryPolicy(mode="custom", fn=spec)
    mode: Any = spec
    k: Any = 1
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"mode", "k"}
        if unknown:
            raise ValueError(f"history dict has unknown keys {sorted(unknown)}; use {{'mode': 'window', 'k': 1}}")
        mode, k = spec.get("mode", "full"), spec.get("k", 1)
    elif isinstance(spec, str) and ":" in spec:
        mode, _, k = spec.partition(":")
    if mode == "full":
        return HistoryPolicy()
    if mode == "window":
        try:
            k = int(k)
        except (TypeError, ValueError):
            k = -1
        if k < 0:
            raise ValueError(f"history window needs k >= 0 (the number of past actions shown), got {spec!r}")
        return HistoryPolicy(mode="window", k=k)
    raise ValueError(
        f"unknown history setting {spec!r}; use 'full', 'window', 'window:K', {{'mode': 'window', 'k': K}} "
        "or a function fn(obs_texts, action_texts) -> list of chat messages"
    )


def window_messages(obs_texts: Sequence[str], action_texts: Sequence[str], k: int) -> list[dict[str, Any]]:
    """One user message: the reset observation, the last `k` actions (oldest first) and the current
    observation. The first turn's prompt is the reset observation alone (as in `full` mode)."""
    if not obs_texts:
        raise ValueError("window_messages needs at least the reset observation")
    n = len(action_texts)
    if n == 0:
        return [{"role": "user", "content": obs_texts[0]}]
    parts = [obs_texts[0]]
    shown = list(action_texts[max(n - k, 0) :]) if k > 0 else []
    if shown:
        first = n - len(shown) + 1
        lines = [f"Step {first + i}: {a}" for i, a in enumerate(shown)]
        parts.append(f"[Steps taken so far: {n}. The last {len(shown)}, oldest first:]\n" + "\n".join(lines))
    else:
        parts.append(f"[Steps taken so far: {n}.]")
    parts.append("[Current observation:]\n" + obs_texts[-1])
    return [{"role": "user", "content": "\n\n".join(parts)}]


def policy_context_length(policy: Any) -> int | None:
    """The context length a policy declares: its `max_context` attribute, else its model's
    `config.max_position_embeddings` (Hugging Face models); None when it declares none."""
    n = getattr(policy, "max_context", None)
    if n is None:
        config = getattr(getattr(policy, "model", None), "config", None)
        n = getattr(config, "max_position_embeddings", None)
    try:
        return int(n) if n is not None and int(n) > 0 else None
    except (TypeError, ValueError):
        return None


def resolve_max_context(explicit: int | None, policies: Sequence[Any]) -> int:
    """The Collector's token budget: `explicit` when given, else the smallest context length the
    policies declare, else `DEFAULT_MAX_CONTEXT_TOKENS`."""
    if explicit is not None:
        return int(explicit)
    declared = [n for n in (policy_context_length(p) for p in policies if p is not None) if n is not None]
    return min(declared) if declared else DEFAULT_MAX_CONTEXT_TOKENS


def prompt_too_long(history: HistoryPolicy, where: str, n_tokens: int, budget: int) -> ValueError:
    """The error for a per-turn prompt that alone leaves no room for an action, with the fix."""
    return ValueError(
        f"history {history.describe()!r}: the prompt for {where} alone has {n_tokens} tokens, and "
        f"max_context_tokens={budget} leaves no room for an action. Raise the budget (Collector("
        "max_context_tokens=...), --max-context-tokens) or show less history ('window:0', a shorter history "
        "function)"
    )


def report_truncation(episodes: Sequence[Episode], env_name: str, budget: int) -> float:
    """The fraction of `episodes` the Collector cut at the budget; a warning with the fix when any was."""
    cut = [ep for ep in episodes if ep.outcome.get("collector_truncated")]
    if cut:
        log.warning(
            "%d of %d episodes of %s ended collector_truncated: the whole history (history=%s) outgrew "
            "max_context_tokens=%d. Fix: feed each turn a short prompt with history='window' "
            "(Collector(history='window'), --history window) or raise the budget (max_context_tokens=..., "
            "--max-context-tokens)", len(cut), len(episodes), env_name or "the env",
            ",".join(sorted({ep.history for ep in cut})), budget,
        )  # fmt: skip
    return len(cut) / max(len(episodes), 1)
