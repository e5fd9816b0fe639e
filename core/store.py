"""RolloutStore: an append-only JSONL file of Episodes, written crash-safe.

Each `append` writes one complete line, flushes and fsyncs it. A process killed mid-write leaves at
most a torn last line; `read` skips it with a warning, and earlier records are never touched.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from creditgym.trajectory import Episode

__all__ = ["RolloutStore"]

log = logging.getLogger(__name__)


class RolloutStore:
    """`RolloutStore(path).append(ep)` / `.extend(eps)` / `.read()` / `iter(store)`."""

    def __init__(self, path: str | os.PathLike[str], fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, episode: Episode) -> None:
        self.extend([episode])

    def extend(self, episodes: Iterable[Episode]) -> None:
        lines = "".join(ep.to_json() + "\n" for ep in episodes)
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
                    yield Episode.from_dict(json.loads(line.decode("utf-8")))
                except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, KeyError) as e:
                    log.warning("%s line %d: skipping an incomplete or corrupt record (%s)", self.path, lineno, e)

    def read(self) -> list[Episode]:
        return list(self)

    def __len__(self) -> int:
        return sum(1 for _ in self)
