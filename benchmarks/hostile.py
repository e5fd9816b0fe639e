"""Seeded generators of hostile action strings: junk text and near misses of an env's grammar.

Everything draws from a `random.Random` passed in, so a run is reproducible from its seed. The
pytest suite drives the same generators (and hypothesis strategies of its own) against every env.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence

__all__ = ["ATOMS", "MUTATIONS", "hostile_string", "json_junk", "near_miss"]

# Short strings that have broken parsers, tools or encoders somewhere.
ATOMS: tuple[str, ...] = (
    "",
    " ",
    "\x00",
    "abc\x00def",
    "\x1b[31m\x1b[2J",
    "\r\n\r\n",
    "\t\v\f",
    "\ud800",
    "\udfff\ud800",
    "\u202e\u200b\ufeff",
    "🙂🙂",
    "中文",
    "../../../../etc/shadow",
    "/etc/passwd",
    "/proc/self/environ",
    "C:\\Windows\\system32",
    "~/.ssh/id_rsa",
    "file:///etc/shadow",
    "http://127.0.0.1:1/",
    "(-8)**0.5",
    "10**10**10",
    "1e309",
    "-1e309",
    "NaN",
    "Infinity",
    "-0",
    "9" * 400,
    "__import__('os').system('id')",
    "'; DROP TABLE t; --",
    "${jndi:ldap://x}",
    "%s%s%s%n",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "</answer>",
    "<answer>",
    "<search>",
    "</search>",
    "<tool_call>",
    "```",
    "null",
    "[]",
    "{}",
    '{"',
    "[[[[[[[[",
    "}}}}",
)

_HUGE_LENGTHS = (10_000, 100_000, 1_000_000)


def _random_codepoints(rng: random.Random, n: int) -> str:
    """Any code point, weighted towards controls, surrogates and the edges of the planes."""
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.2:
            out.append(chr(rng.randrange(0, 0x20)))
        elif kind < 0.3:
            out.append(chr(rng.randrange(0xD800, 0xE000)))
        elif kind < 0.4:
            out.append(chr(rng.choice((0x7F, 0x85, 0xA0, 0x2028, 0x2029, 0xFFFD, 0xFFFE, 0xFFFF, 0x10FFFF))))
        elif kind < 0.7:
            out.append(chr(rng.randrange(0x20, 0x7F)))
        else:
            out.append(chr(rng.randrange(0x80, 0x110000)))
    return "".join(out)


def json_junk(rng: random.Random, depth: int = 0) -> object:
    """A random JSON-ish value: wrong types, extreme numbers, deep nesting."""
    kind = rng.randrange(9 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice((0, -1, 2**63, -(2**63) - 1, 10**30, 1e308, -1e-308, 0.5))
    if kind == 3:
        return rng.choice(ATOMS)
    if kind == 4:
        return _random_codepoints(rng, rng.randrange(0, 16))
    if kind in (5, 6):
        return [json_junk(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if kind == 7:
        return {rng.choice(("name", "arguments", "query", "path", "code", "a", "")): json_junk(rng, depth + 1)
                for _ in range(rng.randrange(0, 4))}
    return json.loads("[" * 50 + "]" * 50)


def _dump(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def hostile_string(rng: random.Random) -> str:
    """One hostile action: random code points, atoms glued together, JSON junk, deep nesting or a huge
    string (about 1 in 50 draws, up to 1,000,000 characters)."""
    kind = rng.random()
    if kind < 0.3:
        return _random_codepoints(rng, rng.choice((1, 4, 16, 64, 256)))
    if kind < 0.55:
        return "".join(rng.choice(ATOMS) for _ in range(rng.randrange(1, 6)))
    if kind < 0.8:
        return _dump(json_junk(rng))
    if kind < 0.9:
        depth = rng.choice((100, 1_000, 10_000, 100_000))
        left, right = rng.choice((("[", "]"), ('{"a":', "}"), ("(", ")"), ("<a>", "</a>")))
        return left * depth + right * rng.choice((0, depth))
    if kind < 0.98:
        return rng.choice(ATOMS) * rng.randrange(2, 200)
    return rng.choice(("x", "\x00", "<", "{", "🙂")) * rng.choice(_HUGE_LENGTHS)


# ---------------------------------------------------------------------- near misses of a grammar


def _drop(rng: random.Random, s: str) -> str:
    if not s:
        return s
    i = rng.randrange(len(s))
    return s[:i] + s[i + 1 :]


def _duplicate(rng: random.Random, s: str) -> str:
    if not s:
        return s
    i = rng.randrange(len(s))
    return s[: i + 1] + s[i:]


def _swap(rng: random.Random, s: str) -> str:
    if len(s) < 2:
        return s
    i = rng.randrange(len(s) - 1)
    return s[:i] + s[i + 1] + s[i] + s[i + 2 :]


def _truncate(rng: random.Random, s: str) -> str:
    return s[: rng.randrange(len(s) + 1)]


def _cut_tag(rng: random.Random, s: str) -> str:
    """Cut inside a tag, or drop a closing tag."""
    tags = [m.span() for m in re.finditer(r"</?[A-Za-z_][^<>]*>", s)]
    if not tags:
        return _truncate(rng, s)
    a, b = rng.choice(tags)
    return s[: rng.randrange(a + 1, b)] if rng.random() < 0.5 else s[:a] + s[b:]


def _insert_atom(rng: random.Random, s: str) -> str:
    i = rng.randrange(len(s) + 1)
    return s[:i] + rng.choice(ATOMS) + s[i:]


def _huge_number(rng: random.Random, s: str) -> str:
    repl = rng.choice(("9" * 400, "-1", "1e309", "NaN", "0x7fffffffffffffff", "-0", "1.5", "1/0", "1_000"))
    if re.search(r"\d+", s):
        return re.sub(r"\d+", repl, s, count=rng.randrange(1, 3))
    return s + repl


def _json_types(rng: random.Random, s: str) -> str:
    """Swap one value of the JSON object inside the action for a value of the wrong type."""
    a, b = s.find("{"), s.rfind("}")
    if a < 0 or b <= a:
        return _insert_atom(rng, s)
    try:
        obj = json.loads(s[a : b + 1])
    except (json.JSONDecodeError, RecursionError):
        return s[:a] + _dump(json_junk(rng)) + s[b + 1 :]
    target = obj
    while isinstance(target, dict) and target and rng.random() < 0.7:
        key = rng.choice(list(target))
        if isinstance(target[key], dict) and target[key] and rng.random() < 0.6:
            target = target[key]
            continue
        target[key] = json_junk(rng)
        break
    else:
        obj = json_junk(rng)
    return s[:a] + _dump(obj) + s[b + 1 :]


def _path_traversal(rng: random.Random, s: str) -> str:
    """Replace the text between the first pair of tags or quotes with a hostile path or value."""
    value = rng.choice(("../../../../etc/shadow", "/etc/gshadow", "a\x00b", "/dev/zero", "/proc/self/mem", "-" * 3, ""))
    m = re.search(r'>([^<]*)<|"([^"]*)"', s)
    if not m:
        return s + value
    g = 1 if m.group(1) is not None else 2
    return s[: m.start(g)] + value + s[m.end(g) :]


def _double(rng: random.Random, s: str) -> str:
    return s + rng.choice(("", "\n", " ")) + s


def _nul(rng: random.Random, s: str) -> str:
    i = rng.randrange(len(s) + 1)
    return s[:i] + "\x00" + s[i:]


MUTATIONS: tuple[Callable[[random.Random, str], str], ...] = (
    _drop, _duplicate, _swap, _truncate, _cut_tag, _insert_atom, _huge_number, _json_types, _path_traversal,
    _double, _nul,
)  # fmt: skip


def near_miss(rng: random.Random, seeds: Sequence[str]) -> str:
    """A well-formed action from `seeds` with one to three grammar-aware mutations applied."""
    s = rng.choice(seeds) if seeds else ""
    for _ in range(rng.randrange(1, 4)):
        s = rng.choice(MUTATIONS)(rng, s)
    return s
