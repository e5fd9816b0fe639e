"""SSRL's format reward and information spans (arXiv 2508.10874, TsinghuaC3I/SSRL).

The reward of an inline self-search reply is `0.9 * EM + 0.1 * format` (SSRL's `NaiveRewardManager`);
`format` is 0 unless the reply is well structured, then `min(1, t/2) * min(t, s+1) / max(t, s+1)`
with t think blocks and s searches. The bodies of self-written `<information>` blocks are masked
out of the loss (SSRL's `enable_information_loss_mask`): `information_spans` gives their ranges.
"""

from __future__ import annotations

import re

__all__ = ["PLACEHOLDERS", "TAGS", "information_spans", "ssrl_format_reward", "ssrl_reward"]

TAGS = ("think", "search", "information", "answer")
PLACEHOLDERS = frozenset({"...", "…", "query", "answer", "short answer", "information", "your answer", "search query"})
_ANY_TAG = re.compile(r"</?([A-Za-z_][\w-]*)>")
MAX_THINK = 8


def _blocks(text: str) -> list[tuple[str, int, int, int, int]] | None:
    """(tag, start, body_start, body_end, end) of each block, or None unless every tag is one of the
    four and they pair up without nesting."""
    out = []
    open_tag: tuple[str, int, int] | None = None
    for m in _ANY_TAG.finditer(text):
        name, closing = m.group(1), m.group(0).startswith("</")
        if name not in TAGS:
            return None
        if open_tag is None:
            if closing:
                return None
            open_tag = (name, m.start(), m.end())
        else:
            if not closing or name != open_tag[0]:
                return None
            out.append((name, open_tag[1], open_tag[2], m.start(), m.end()))
            open_tag = None
    return None if open_tag is not None else out


def information_spans(text: str) -> list[tuple[int, int]]:
    """`[start, end)` character ranges of every `<information>` body (non-greedy, in order)."""
    return [(m.start(1), m.end(1)) for m in re.finditer(r"<information>(.*?)</information>", text, re.DOTALL)]


def ssrl_format_reward(text: str) -> float:
    """SSRL's `format_reward`: 0 unless the reply starts with `<think>`, ends with `</answer>`, uses
    only the four tags, has no empty or placeholder body, one-line queries, every `<search>` directly
    followed by an `<information>` (equal counts), one answer, at most 8 think blocks; then
    min(1, t/2) * min(t, s+1) / max(t, s+1)."""
    stripped = text.strip()
    if not stripped.startswith("<think>") or not stripped.endswith("</answer>"):
        return 0.0
    blocks = _blocks(stripped)
    if not blocks:
        return 0.0
    for tag, _, b0, b1, _ in blocks:
        body = stripped[b0:b1].strip()
        if not body or body.lower() in PLACEHOLDERS:
            return 0.0
        if tag == "search" and "\n" in body:
            return 0.0
    tags = [b[0] for b in blocks]
    if tags.count("answer") != 1 or tags[-1] != "answer":
        return 0.0
    for i, (tag, *_, end) in enumerate(blocks):
        if tag != "search":
            continue
        if i + 1 >= len(blocks) or blocks[i + 1][0] != "information" or stripped[end : blocks[i + 1][1]].strip():
            return 0.0
    t, s = tags.count("think"), tags.count("search")
    if s != tags.count("information") or t > MAX_THINK or t == 0:
        return 0.0
    return min(1.0, t / 2) * min(t, s + 1) / max(t, s + 1)


def ssrl_reward(em: float, fmt: float) -> float:
    """SSRL's mix: 0.9 * EM + 0.1 * format."""
    return 0.9 * em + 0.1 * fmt
