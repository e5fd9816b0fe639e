"""`Text`: a gymnasium space of any unicode string up to `max_length` characters.

Gymnasium's own `Text` space restricts the charset to alphanumerics and defaults to a minimum length
of 1, which rejects both real observations and the empty terminal observation. This subclass keeps
gymnasium's API (so its checker, wrappers and vector envs work) and accepts any `str`.

Gymnasium's async vector env copies observations through shared memory, one int32 per character
looked up in the space's charset; an unrestricted space has no charset, so this module registers
its own shared-memory functions for `Text`: each character is stored as `ord(c) + 1` (0 pads), so
any code point, NUL and lone surrogates included, round-trips.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from multiprocessing.sharedctypes import SynchronizedArray
from types import ModuleType
from typing import Any, overload

import numpy as np
from gymnasium.spaces import Text as _GymText
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

__all__ = ["SharedTexts", "Text"]

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


@create_shared_memory.register(Text)
def _create_text_shared_memory(space: Text, n: int = 1, ctx: ModuleType = mp) -> SynchronizedArray[Any]:
    return ctx.Array(np.dtype(np.int32).char, n * space.max_length)  # type: ignore[attr-defined, no-any-return]


class SharedTexts(Sequence[str]):
    """A live view of `n` strings in shared memory: what the async vector env's `observations` holds.

    Gymnasium reads the shared buffer once, when the vector env is built, and afterwards hands out
    `deepcopy(observations)`; a view (rather than a tuple of strings decoded at build time) therefore
    shows what the workers wrote since, and its deepcopy is a plain tuple of strings, as the sync
    vector env returns."""

    def __init__(self, codes_NL: np.ndarray):
        self._codes_NL = codes_NL

    def __len__(self) -> int:
        return int(self._codes_NL.shape[0])

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[str, ...]: ...
    def __getitem__(self, i: int | slice) -> str | tuple[str, ...]:
        if isinstance(i, slice):
            return tuple(self[j] for j in range(len(self))[i])
        row_L = self._codes_NL[i]
        return "".join(map(chr, row_L[row_L > 0] - 1))

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return tuple(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and not isinstance(other, str) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"SharedTexts({tuple(self)!r})"


@read_from_shared_memory.register(Text)
def _read_text_from_shared_memory(space: Text, shared_memory: SynchronizedArray[Any], n: int = 1) -> SharedTexts:
    codes_NL = np.frombuffer(shared_memory.get_obj(), dtype=np.int32).reshape((n, space.max_length))  # type: ignore[call-overload]
    return SharedTexts(codes_NL)


@write_to_shared_memory.register(Text)
def _write_text_to_shared_memory(space: Text, index: int, value: str, shared_memory: SynchronizedArray[Any]) -> None:
    size = space.max_length
    if len(value) > size:
        raise ValueError(f"a string of {len(value)} characters does not fit {space!r}: cut it to max_length first")
    codes_L = np.zeros(size, dtype=np.int32)
    codes_L[: len(value)] = np.fromiter((ord(c) + 1 for c in value), dtype=np.int32, count=len(value))
    destination = np.frombuffer(shared_memory.get_obj(), dtype=np.int32)  # type: ignore[call-overload]
    np.copyto(destination[index * size : (index + 1) * size], codes_L)
