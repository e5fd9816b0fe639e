"""The per-env backend response log (ENVS.md section 0, "Response log").

Call i of an episode is logged as `[fingerprint, {"ok": result} | {"error": [kind, detail]}]`. This
module holds the fingerprint, the check of a log handed in through `reset(options={"backend_log":
...})`, and the cache of finished episodes' logs that replay reads, capped by count and by bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

__all__ = ["BackendLogCache", "check_backend_log", "fingerprint"]

_SHAPE = 'a list of [fingerprint: str, {"ok": result} or {"error": [kind, detail]}] entries, as in get_state()["backend_log"]'


def fingerprint(kind: str, request: Any) -> str:
    """sha1 of the call kind and the canonical JSON of its request."""
    body = json.dumps(request, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha1((kind + body).encode()).hexdigest()


def check_backend_log(log: Any) -> list[list[Any]] | None:
    """Validate `options["backend_log"]`: None, or a list of `[fingerprint: str, result: dict]`."""
    if log is None:
        return None
    if not isinstance(log, (list, tuple)):
        raise ValueError(f"options['backend_log'] must be {_SHAPE}; got {type(log).__name__}")
    for i, entry in enumerate(log):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], dict)):
            raise ValueError(f"options['backend_log'] entry {i} is {entry!r:.80}; it must be {_SHAPE}")
    return [list(e) for e in log]


class BackendLogCache:
    """Finished episodes' logs by `(task_id, seed)`: at most `max_episodes` of them and `max_bytes`
    in all (each log measured as its JSON), the oldest out first. A tool that logs big payloads
    (files a sandbox wrote) would otherwise hold gigabytes per env."""

    def __init__(self, max_episodes: int, max_bytes: int):
        self.max_episodes = max_episodes
        self.max_bytes = max_bytes
        self._logs: OrderedDict[tuple[str, Any], list[list[Any]]] = OrderedDict()
        self._bytes: dict[tuple[str, Any], int] = {}

    def get(self, key: tuple[str, Any]) -> list[list[Any]]:
        return list(self._logs.get(key, []))

    def put(self, key: tuple[str, Any], log: list[list[Any]]) -> int | None:
        """Keep `log` under `key` and evict as needed; return its size, or None when the log alone
        is larger than `max_bytes` and was not kept."""
        self._logs.pop(key, None)
        self._bytes.pop(key, None)
        size = len(json.dumps(log, ensure_ascii=False, default=str))
        if size > self.max_bytes:
            return None
        self._logs[key] = list(log)
        self._bytes[key] = size
        while len(self._logs) > self.max_episodes or self.total_bytes > self.max_bytes:
            old, _ = self._logs.popitem(last=False)
            self._bytes.pop(old, None)
        return size

    @property
    def total_bytes(self) -> int:
        return sum(self._bytes.values())

    def clear(self) -> None:
        self._logs.clear()
        self._bytes.clear()

    def __len__(self) -> int:
        return len(self._logs)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self._logs)
