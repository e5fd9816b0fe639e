"""Pure, total parsing helpers shared by the env families (ENVS.md section 1.7).

Answer normalization and scoring follow SQuAD's evaluation script as used by Search-R1
(`verl/utils/reward_score/qa_em.py`): lowercase, drop ASCII punctuation, remove the articles
a/an/the, collapse whitespace; EM = equal to some gold; F1 = max token F1 over golds.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from creditgym.text import normalize_answer

__all__ = [
    "Block",
    "char_f1",
    "exact_match",
    "extract_json_object",
    "f1",
    "find_blocks",
    "first_block",
    "normalize_answer",
    "strip_think",
]


@dataclass(frozen=True)
class Block:
    """One `<tag>body</tag>` occurrence: `start`/`end` span the whole block, `body_start`/`body_end`
    the body (character offsets into the searched text)."""

    tag: str
    body: str
    start: int
    end: int
    body_start: int
    body_end: int


def find_blocks(text: str, tags: Iterable[str]) -> list[Block]:
    """Every `<tag>...</tag>` block for the given tags, in order of appearance (non-greedy, DOTALL,
    case-sensitive). Blocks do not nest: scanning resumes after each block's closing tag."""
    names = [re.escape(t) for t in tags]
    if not names:
        return []
    pattern = re.compile(r"<(" + "|".join(names) + r")>(.*?)</\1>", re.DOTALL)
    return [
        Block(m.group(1), m.group(2), m.start(), m.end(), m.start(2), m.end(2)) for m in pattern.finditer(text)
    ]


def first_block(text: str, tag: str) -> Block | None:
    """The first `<tag>...</tag>` block, or None."""
    blocks = find_blocks(text, [tag])
    return blocks[0] if blocks else None


def strip_think(text: str) -> str:
    """Remove `<think>...</think>` blocks (and an unclosed trailing `<think>`)."""
    out = re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL)
    return re.sub(r"<think>.*\Z", "", out, flags=re.DOTALL)


def extract_json_object(text: str) -> tuple[Any, str | None]:
    """The first balanced `{...}` in `text` parsed as JSON: `(obj, None)` or `(None, error)`.

    Brace matching is string-aware (braces inside JSON strings and escaped quotes do not count), so
    `{"code": "print('}')"}` is found whole. Never raises.
    """
    start = text.find("{")
    if start < 0:
        return None, "no JSON object found: expected {...}"
    depth, in_str, esc = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                try:
                    return json.loads(text[start : i + 1]), None
                except (json.JSONDecodeError, RecursionError) as e:
                    return None, f"invalid JSON: {e}"
    return None, "unbalanced braces: the JSON object is not closed with }"


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals some normalized gold, else 0.0."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def _max_f1(pred: Counter[str], golds: Iterable[Counter[str]]) -> float:
    """Max F1 between the multiset `pred` and each multiset in `golds` (0 when nothing is shared)."""
    best = 0.0
    for gold in golds:
        same = sum((pred & gold).values())
        if same == 0:
            continue
        precision, recall = same / sum(pred.values()), same / sum(gold.values())
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def f1(prediction: str, golds: Sequence[str]) -> float:
    """Max token-level F1 between the normalized prediction and each normalized gold."""
    return _max_f1(Counter(normalize_answer(prediction).split()), (Counter(normalize_answer(g).split()) for g in golds))


def _char_bigrams(s: str) -> Counter[str]:
    t = normalize_answer(s).replace(" ", "_")
    return Counter(t[i : i + 2] for i in range(len(t) - 1)) if len(t) > 1 else Counter(t)


def char_f1(prediction: str, golds: Sequence[str]) -> float:
    """Max F1 over the character bigrams of the normalized prediction and each normalized gold
    (spaces kept as `_`): partial credit for a near-copy of a name, 1.0 for an exact match,
    and long or repeated output loses precision."""
    return _max_f1(_char_bigrams(prediction), (_char_bigrams(g) for g in golds))
