"""Chat-template deltas for the Collector: the exact tokens appended to a conversation.

The Collector never re-tokenizes what the policy sampled. After an action it appends only the tokens
the chat template adds for the next observation (ENVS.md section 0, observation roles):

* `user` / `tool`: render the conversation with `apply_chat_template(..., tokenize=True,
  return_dict=False)` and take the suffix after the ids already in the context. When the sampled
  action ids differ from the template's own tokenization of the action text (a stop string instead of
  the end-of-turn token, different merges), the suffix is taken after the template's rendering of
  the conversation instead, prefixed with the end-of-turn tokens the action did not sample itself;
  templates that rewrite earlier turns (not append-only) fall back to a fixed dummy conversation.
* `continuation`: the observation text is encoded and appended raw to the running assistant text
  (Search-R1's protocol, arXiv 2503.09516).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

__all__ = ["ChatRenderer", "char_mask_to_token_mask", "render_ids"]

log = logging.getLogger(__name__)

_DUMMY = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]


def render_ids(tokenizer: Any, messages: Sequence[dict[str, Any]], add_generation_prompt: bool) -> list[int]:
    """`tokenizer.apply_chat_template` as a plain list of ids, whatever container the tokenizer returns."""
    out = tokenizer.apply_chat_template(
        list(messages), tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False
    )
    if hasattr(out, "keys") and "input_ids" in out:  # a BatchEncoding despite return_dict=False
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    out = list(out)
    if out and isinstance(out[0], (list, tuple)):
        out = list(out[0])
    return [int(i) for i in out]


def _render_text(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> str:
    out = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=False)
    return out if isinstance(out, str) else tokenizer.decode(render_ids(tokenizer, messages, False))


class ChatRenderer:
    """Builds the token ids the Collector appends, for one tokenizer (see the module docstring)."""

    def __init__(self, tokenizer: Any, system_prompt: str | None = None):
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.closing_ids = self._closing_ids()
        self.has_tool_role = self._has_tool_role()
        self._warned = False

    def _closing_ids(self) -> list[int]:
        """The tokens the template puts after an assistant message's content (e.g. `<|im_end|>\\n`)."""
        try:
            gen = render_ids(self.tokenizer, _DUMMY[:1], True)
            full = render_ids(self.tokenizer, _DUMMY, False)
            content = list(self.tokenizer.encode("y", add_special_tokens=False))
        except Exception as e:  # a template that cannot render the dummy: no closing tokens known
            log.warning("chat template could not render a dummy conversation (%s); no end-of-turn tokens", e)
            return []
        if full[: len(gen)] == gen and full[len(gen) : len(gen) + len(content)] == content:
            return full[len(gen) + len(content) :]
        return []

    def _has_tool_role(self) -> bool:
        marker = "zq7tool"
        try:
            text = _render_text(self.tokenizer, [*_DUMMY, {"role": "tool", "content": marker}])
        except Exception:
            return False
        return marker in text

    # ------------------------------------------------------------------ building blocks
    def first_messages(self, obs: str) -> list[dict[str, Any]]:
        msgs: list[dict[str, Any]] = []
        if self.system_prompt:
            msgs.append({"role": "system", "content": self.system_prompt})
        msgs.append({"role": "user", "content": obs})
        return msgs

    def with_system(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """`messages` with the system prompt in front (when one is set and they start with none)."""
        msgs = [dict(m) for m in messages]
        if self.system_prompt and not (msgs and msgs[0].get("role") == "system"):
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        return msgs

    def first_ids(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        return render_ids(self.tokenizer, messages, True)

    def observation_messages(self, obs: str, obs_role: str, info: dict[str, Any]) -> list[dict[str, Any]]:
        """The chat messages for one observation: one `tool` message per call from
        `info["tool_results"]` for tool-role envs (user when the template has no tool role or the
        step ran no tool), else one `user` message with the observation text."""
        results = info.get("tool_results") if obs_role == "tool" else None
        if results and self.has_tool_role:
            return [{"role": "tool", "content": _tool_content(r)} for r in results]
        return [{"role": "user", "content": obs}]

    def remaining_closing(self, action_ids: Sequence[int]) -> list[int]:
        """The end-of-turn tokens the action did not sample itself (all of them after a stop string)."""
        c = self.closing_ids
        for j in range(len(c), 0, -1):
            if len(action_ids) >= j and list(action_ids[-j:]) == c[:j]:
                return c[j:]
        return list(c)

    def delta_ids(
        self,
        ctx_ids: Sequence[int],
        messages: Sequence[dict[str, Any]],
        new_messages: Sequence[dict[str, Any]],
        action_ids: Sequence[int],
    ) -> list[int]:
        """Tokens to append after an action so the context ends with `new_messages` and a generation
        prompt. `messages` is the conversation so far, ending with the assistant's action."""
        full = render_ids(self.tokenizer, [*messages, *new_messages], True)
        n = len(ctx_ids)
        if full[:n] == list(ctx_ids):
            return full[n:]
        prev = render_ids(self.tokenizer, messages, False)
        if full[: len(prev)] == prev:
            return self.remaining_closing(action_ids) + full[len(prev) :]
        d0 = render_ids(self.tokenizer, _DUMMY, False)
        d1 = render_ids(self.tokenizer, [*_DUMMY, *new_messages], True)
        if d1[: len(d0)] != d0:
            raise ValueError(
                "the tokenizer's chat template is not append-only even on a fixed two-message conversation, so "
                "the Collector cannot append observation tokens exactly; use a template whose rendering of a "
                "conversation is a prefix of its rendering with one more message"
            )
        if not self._warned:
            log.warning("chat template rewrites earlier turns; observation tokens come from a dummy-prefix delta")
            self._warned = True
        return self.remaining_closing(action_ids) + d1[len(d0) :]

    def continuation_ids(self, obs: str) -> list[int]:
        return [int(i) for i in self.tokenizer.encode(obs, add_special_tokens=False)]


def _tool_content(result: Any) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, dict) and isinstance(result.get("content"), str) and set(result) <= {"content", "name", "tool_call_id"}:
        return result["content"]
    return json.dumps(result, ensure_ascii=False)


def char_mask_to_token_mask(
    tokenizer: Any, action_ids: Sequence[int], spans: Sequence[Sequence[int]], text: str | None = None
) -> list[int]:
    """Turn character ranges `[start, end)` of the action text into a 0/1 mask over the sampled ids.

    Decodes token by token (cumulative prefix decodes, so multi-byte characters split over tokens
    land on the token that completes them) to find each token's character range; a token whose range
    overlaps a span gets 0. The ids themselves are never re-tokenized. `text` defaults to the
    decoded action; spans refer to the action text the env saw, which must equal it.
    """
    ids = [int(i) for i in action_ids]
    mask = [1] * len(ids)
    if not spans:
        return mask
    prefixes = [ids[: t + 1] for t in range(len(ids))]
    if hasattr(tokenizer, "batch_decode"):  # one call into a fast tokenizer's Rust decoder
        texts = tokenizer.batch_decode(prefixes, skip_special_tokens=True)
    else:
        texts = [tokenizer.decode(p, skip_special_tokens=True) for p in prefixes]
    ends: list[int] = []
    prev_len = 0
    for t, piece in enumerate(texts):
        # a prefix ending inside a multi-byte character decodes with a trailing U+FFFD: that token
        # owns no character yet (it belongs to the character the next tokens complete)
        if t < len(texts) - 1:
            piece = piece.rstrip("\ufffd")
        prev_len = max(len(piece), prev_len)
        ends.append(prev_len)
    starts = [0, *ends[:-1]]
    ranges = [(int(s), int(e)) for s, e in spans if int(e) > int(s)]
    inherit = 1
    for t in range(len(ids) - 1, -1, -1):
        s_t, e_t = starts[t], ends[t]
        if e_t == s_t:
            mask[t] = inherit
            continue
        mask[t] = 0 if any(s < e_t and s_t < e for s, e in ranges) else 1
        inherit = mask[t]
    return mask
