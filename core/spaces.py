"""`Text`: a gymnasium space of any unicode string up to `max_length` characters.

Gymnasium's own `Text` space restricts the charset to alphanumerics and defaults to a minimum length
of 1, which rejects both real observations and the empty terminal observation. This subclass keeps
gymnasium's API (so its checker, wrappers and vector envs work) and accepts any `str`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces import Text as _GymText

__all__ = ["Text"]

_FUZZ_TOKENS = ("<answer>", "</answer>", "<search>", "{", "}", '"', "\n", " ", "\u00e9", "\u4e2d", "\U0001f600", "\t")
_ASCII = [chr(c) for c in range(32, 127)]


class Text(_GymText):
    """Any unicode string with `min_length <= len(s) <= max_length` (min_length defaults to 0)."""

    def __init__(self, max_length: int = 16384, *, min_length: int = 0, seed: int | np.random.Generator | None = None):
        super().__init__(max_length=max_length, min_length=min_length, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """A random mix of printable ASCII, unicode and fuzz tokens (protocol tags, braces, quotes)."""
        rng = self.np_random
        hi = min(self.max_length, 64)
        n = int(rng.integers(self.min_length, max(self.min_length, hi) + 1))
        parts: list[str] = []
        while sum(map(len, parts)) < n:
            r = rng.random()
            if r < 0.7:
                parts.append(_ASCII[int(rng.integers(len(_ASCII)))])
            else:
                parts.append(_FUZZ_TOKENS[int(rng.integers(len(_FUZZ_TOKENS)))])
        return "".join(parts)[: self.max_length] if n else ""

    def __repr__(self) -> str:
        return f"creditgym.spaces.Text(min_length={self.min_length}, max_length={self.max_length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Text) and (self.min_length, self.max_length) == (other.min_length, other.max_length)

    def __hash__(self) -> int:
        return hash((Text, self.min_length, self.max_length))
