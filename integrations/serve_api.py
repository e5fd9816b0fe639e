"""The request side of `creditgym serve` (integrations/serve.py): field checks that turn a bad request
into an OpenAI-shaped 4xx error, prompts, stop strings as vLLM applies them, and the server-sent
events of a streamed reply. Pure functions of the request body (and the tokenizer)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from creditgym.agents.base import Sampling

__all__ = [
    "MAX_N",
    "RequestError",
    "cut_at_stop",
    "flag_field",
    "float_field",
    "int_field",
    "parse_sampling",
    "request_prompts",
    "stream_events",
    "token_piece",
]

MAX_N = 64
"""Most samples one request may ask for (`n` times the number of prompts)."""


class RequestError(Exception):
    """A request the server refuses: HTTP `status` and an OpenAI-style error object."""

    def __init__(
        self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def payload(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}
        }


# ---------------------------------------------------------------------- request fields
def int_field(
    body: dict[str, Any], key: str, default: int | None, lo: int, hi: int | None = None
) -> int | None:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        bound = f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise RequestError(400, f"'{key}' must be {bound}, got {v!r}", key)
    return v


def float_field(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not (lo <= float(v) <= hi):
        raise RequestError(400, f"'{key}' must be a number in [{lo}, {hi}], got {v!r}", key)
    return float(v)


def flag_field(body: dict[str, Any], key: str, default: bool) -> bool:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise RequestError(400, f"'{key}' must be true or false, got {v!r}", key)
    return v


def _stops(body: dict[str, Any]) -> tuple[str, ...]:
    v = body.get("stop")
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise RequestError(400, f"'stop' must be a non-empty string or a list of them, got {v!r}", "stop")
    return tuple(items)


def parse_sampling(body: dict[str, Any], default_max_tokens: int) -> tuple[Sampling, int]:
    """The request's `Sampling` and `n`, or a RequestError naming the bad field."""
    max_tokens = int_field(body, "max_tokens", None, 1) or int_field(
        body, "max_completion_tokens", default_max_tokens, 1
    )
    top_k = int_field(body, "top_k", 0, -1)
    sampling = Sampling(
        temperature=float_field(body, "temperature", 1.0, 0.0, 100.0),
        top_p=float_field(body, "top_p", 1.0, 1e-9, 1.0),
        top_k=max(0, top_k or 0),  # vLLM spells "off" -1, creditgym 0
        max_new_tokens=int(max_tokens or default_max_tokens),
        stop=_stops(body),
        seed=int_field(body, "seed", None, -(2**63)),
    )
    return sampling, int(int_field(body, "n", 1, 1, MAX_N) or 1)


def cut_at_stop(text: str, stops: tuple[str, ...], keep: bool) -> tuple[str, str | None]:
    """`text` up to the earliest stop string (kept when `keep`, as vLLM's
    `include_stop_str_in_output`), and the stop string that fired (None when none did)."""
    hits = [(text.find(s), s) for s in stops if s in text]
    if not hits:
        return text, None
    at, s = min(hits)
    return text[: at + len(s)] if keep else text[:at], s


def token_piece(tokenizer: Any, tok: int, as_id: bool) -> str:
    """A sampled token as a logprob entry spells it: vLLM's `token_id:N`, or its decoded text."""
    return f"token_id:{tok}" if as_id else str(tokenizer.decode([tok], skip_special_tokens=False))


def request_prompts(tokenizer: Any, body: dict[str, Any]) -> list[list[int]]:
    """The token ids of a completions request's `prompt`: a text, token ids, or a list of either
    (texts tokenized with special tokens unless `add_special_tokens` is false, as vLLM)."""
    p = body.get("prompt")
    special = flag_field(body, "add_special_tokens", True)
    is_ids = isinstance(p, list) and p and all(isinstance(i, int) and not isinstance(i, bool) for i in p)
    items = [p] if isinstance(p, str) or is_ids else p
    if not isinstance(items, list) or not items:
        raise RequestError(
            400, "'prompt' must be a string, a list of token ids, or a non-empty list of either", "prompt"
        )
    vocab = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    out = []
    for item in items:
        if isinstance(item, str):
            ids = [int(i) for i in tokenizer.encode(item, add_special_tokens=special)]
        elif isinstance(item, list) and all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in item
        ):
            ids = list(item)
        else:
            raise RequestError(400, f"a prompt must be a string or a list of non-negative token ids, got {str(item)[:80]!r}",
                               "prompt")  # fmt: skip
        if not ids:
            raise RequestError(400, "a prompt is empty", "prompt")
        if vocab is not None and max(ids) >= vocab:
            raise RequestError(
                400, f"prompt token id {max(ids)} is outside the vocabulary (size {vocab})", "prompt"
            )
        out.append(ids)
    return out


def stream_events(reply: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    """The server-sent events of a finished reply: each choice whole in one chunk (chat: as a delta)."""
    chat = reply["object"] == "chat.completion"
    head = {"id": reply["id"], "object": "chat.completion.chunk" if chat else "text_completion",
            "created": reply["created"], "model": reply["model"]}  # fmt: skip
    for c in reply["choices"]:
        if chat:
            delta = {"role": "assistant", "content": c["message"]["content"]}
            part = {
                "index": c["index"],
                "delta": delta,
                "logprobs": c["logprobs"],
                "finish_reason": c["finish_reason"],
            }
        else:
            part = {k: c[k] for k in ("index", "text", "logprobs", "finish_reason")}
        part.update({k: c[k] for k in ("stop_reason", "token_ids", "prompt_token_ids") if k in c})
        yield {**head, "choices": [part]}
    if include_usage:
        yield {**head, "choices": [], "usage": reply["usage"]}
