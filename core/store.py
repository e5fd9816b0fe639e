"""RolloutStore: an append-only JSONL file of Episodes, written crash-safe.

Each `append` writes one complete line, flushes and fsyncs it. A process killed mid-write leaves at
most a torn last line; `read` skips it with a warning, and earlier records are never touched.

Lines are strict JSON (RFC 8259), readable by any JSON parser:

* non-finite floats (NaN and infinite rewards, outcomes, probe values, in any nested field) are
  written as `{"__float__": "nan" | "inf" | "-inf"}` and read back as the same floats; a dict of the
  episode's own that happens to have that shape is wrapped as `{"__literal__": {...}}`, so reading
  back is exact whatever the data;
* text is written ASCII-only (`\\uXXXX` escapes), so lone surrogates, which have no UTF-8 encoding,
  round-trip as JSON escapes instead of failing the write. A JSON reader joins a high surrogate
  escape followed by a low one into one character, so a string holding such a pair of separate
  code points is written as `{"__codepoints__": [...]}` (dict keys are not tagged: a key with such
  a pair reads back joined).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from creditgym.trajectory import Episode

__all__ = ["RolloutStore", "decode_episode", "encode_episode"]

log = logging.getLogger(__name__)

_FLOAT_TAG = "__float__"
_LITERAL_TAG = "__literal__"
_CODEPOINTS_TAG = "__codepoints__"
_TAGS = (_FLOAT_TAG, _LITERAL_TAG, _CODEPOINTS_TAG)
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _tag(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return {_FLOAT_TAG: "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
    if isinstance(v, str) and _SURROGATE_PAIR.search(v):
        return {_CODEPOINTS_TAG: [ord(c) for c in v]}
    if isinstance(v, dict):
        d = {k: _tag(x) for k, x in v.items()}
        return {_LITERAL_TAG: d} if len(d) == 1 and next(iter(d)) in _TAGS else d
    if isinstance(v, (list, tuple)):
        return [_tag(x) for x in v]
    return v


def _untag(v: Any) -> Any:
    if isinstance(v, dict):
        if len(v) == 1 and _FLOAT_TAG in v:
            return _NONFINITE[v[_FLOAT_TAG]]
        if len(v) == 1 and _CODEPOINTS_TAG in v:
            return "".join(map(chr, v[_CODEPOINTS_TAG]))
        if len(v) == 1 and _LITERAL_TAG in v:
            return {k: _untag(x) for k, x in v[_LITERAL_TAG].items()}
        return {k: _untag(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_untag(x) for x in v]
    return v


def encode_episode(episode: Episode) -> str:
    """One strict-JSON, ASCII-only line (no newline) for `episode` (module docstring)."""
    return json.dumps(_tag(episode.to_dict()), ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def decode_episode(line: str | bytes) -> Episode:
    """The Episode of one line written by `encode_episode` (or by the plain `Episode.to_json`)."""
    return Episode.from_dict(_untag(json.loads(line)))


class RolloutStore:
    """`RolloutStore(path).append(ep)` / `.extend(eps)` / `.read()` / `iter(store)`."""

    def __init__(self, path: str | os.PathLike[str], fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, episode: Episode) -> None:
        self.extend([episode])

    def extend(self, episodes: Iterable[Episode]) -> None:
        lines = "".join(encode_episode(ep) + "\n" for ep in episodes)
        if not lines:
            return
        with open(self.path, "a+b") as f:
            # A torn line left by a killed writer must not swallow this record: start on a fresh line.
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(lines.encode("utf-8"))
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    def __iter__(self) -> Iterator[Episode]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                line = raw.strip()
                if not line:
                    continue
                try:
                    yield decode_episode(line.decode("utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, KeyError) as e:
                    log.warning("%s line %d: skipping an incomplete or corrupt record (%s)", self.path, lineno, e)

    def read(self) -> list[Episode]:
        return list(self)

    def __len__(self) -> int:
        return sum(1 for _ in self)
