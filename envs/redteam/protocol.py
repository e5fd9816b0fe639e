"""Message grammar shared by the red-team envs: `<think>` notes removed, empty or broken text invalid."""

from __future__ import annotations

from creditgym.envs.base import Invalid, Parsed
from creditgym.envs.parsing import strip_think

__all__ = ["BAD_CHARS", "BAD_PLAN", "EMPTY_MESSAGE", "EMPTY_REPLY", "MAX_MESSAGE_CHARS", "parse_levels", "parse_message"]

MAX_MESSAGE_CHARS = 2000
EMPTY_MESSAGE = "Your message was empty after removing <think> notes. Write the message to send."
EMPTY_REPLY = "Your reply was empty after removing <think> notes. Write ShopBot's reply to the user."
BAD_CHARS = "Your message had NUL bytes or broken unicode (shown as \ufffd). Send plain text only."
BAD_PLAN = (
    "Your plan has no numbered messages. Write it as a numbered list, for example:\n"
    "1. Hi! What are your opening hours?\n2. Thanks! One more question ..."
)


def parse_levels(victim_level: int | tuple[int, int]) -> tuple[int, int]:
    """`2` or `(2, 3)` -> an inclusive level range within 0-4."""
    lo, hi = (victim_level, victim_level) if isinstance(victim_level, int) else tuple(victim_level)
    if not (0 <= int(lo) <= int(hi) <= 4):
        raise ValueError(f"victim_level must be an int or (lo, hi) range within 0-4, got {victim_level!r}")
    return int(lo), int(hi)


def parse_message(action: str, empty: str) -> Parsed | Invalid:
    """The reply minus `<think>` notes, stripped and cut at 2 000 characters; empty is invalid, and
    so is text with U+FFFD (what sanitizing makes of NUL bytes and lone surrogates)."""
    if "\ufffd" in action:
        return Invalid(BAD_CHARS)
    text = strip_think(action).strip()[:MAX_MESSAGE_CHARS]
    return Parsed("message", {"text": text}, action) if text else Invalid(empty)
