"""UI elements and the screen text the agent reads (ENVS.md section 4, "Simulated phone").

One line per visible element, in reading order, indexed from 0 on each observation as
AndroidWorld's T3A agent does:

    UI element 3: Button text="Send" clickable bounds=[900,2180][1032,2330]

`render_screen` writes the text and `parse_screen` reads it back (scripted experts use it), so
a screen re-parses to the same elements. The hidden `action` of an element (what a click does in
the simulator) is never rendered.

`compact=True` writes the same elements in about 45% of the tokens, for small models on CPU: no
bounds, and a resource id of the current app's package shortened to its name (`contacts:id/name`
on the Contacts screen is written `id="name"`, the home screen's `launcher:id/...` likewise; other
ids, such as `android:id/clock`, stay whole):

    [3] Button text="Send" id="send" clickable

`parse_screen` reads both forms (a compact element's bounds read back as zeros).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONTENT_TOP",
    "ROW_H",
    "SCREEN_H",
    "SCREEN_W",
    "VISIBLE_ROWS",
    "UIElement",
    "parse_screen",
    "render_element",
    "render_screen",
    "row_bounds",
]

SCREEN_W, SCREEN_H = 1080, 2400
ROW_H = 200
VISIBLE_ROWS = 8
CONTENT_TOP = 264  # below the status bar (0-96) and the app bar (96-264)

Bounds = tuple[int, int, int, int]


@dataclass(frozen=True)
class UIElement:
    """One visible UI element. `action` is the simulator's hidden click handler (not rendered,
    not compared): a tuple like `("toggle", "wifi")`."""

    cls: str
    bounds: Bounds
    text: str | None = None
    desc: str | None = None
    hint: str | None = None
    rid: str | None = None
    checkable: bool = False
    checked: bool = False
    editable: bool = False
    scrollable: bool = False
    clickable: bool = False
    focused: bool = False
    disabled: bool = False
    action: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    @property
    def center(self) -> tuple[int, int]:
        x1, y1, x2, y2 = self.bounds
        return (x1 + x2) // 2, (y1 + y2) // 2

    @property
    def label(self) -> str:
        """What the effect line calls the element: its text, else its description, else its hint."""
        return self.text or self.desc or self.hint or ""


def row_bounds(slot: int, x1: int = 0, x2: int = SCREEN_W, top: int = CONTENT_TOP) -> Bounds:
    """Bounds of visible list row `slot` (0-based) in the content area."""
    y1 = top + slot * ROW_H
    return (x1, y1, x2, y1 + ROW_H)


_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _q(s: str) -> str:
    """JSON-quote, escaping the characters `str.splitlines` breaks on (JSON leaves them raw)."""
    out = json.dumps(s, ensure_ascii=False)
    for ch, esc in _LINE_BREAKS.items():
        out = out.replace(ch, esc)
    return out


def _short_rid(app: str) -> str:
    """The resource-id prefix a compact screen of `app` leaves out (the home screen is the launcher's)."""
    return f"{'launcher' if app == 'Home' else app.lower()}:id/"


def render_element(i: int, e: UIElement, compact_app: str | None = None) -> str:
    """One screen line (ENVS.md section 4 line grammar); `compact_app` (the current app's name)
    writes the compact form of the module docstring."""
    compact = compact_app is not None
    parts = [f"[{i}] {e.cls}" if compact else f"UI element {i}: {e.cls}"]
    if e.text is not None:
        parts.append(f"text={_q(e.text)}")
    if e.desc is not None:
        parts.append(f"desc={_q(e.desc)}")
    if e.hint is not None:
        parts.append(f"hint={_q(e.hint)}")
    if e.rid is not None:
        prefix = _short_rid(compact_app) if compact_app else None
        parts.append(f"id={_q(e.rid[len(prefix):] if prefix and e.rid.startswith(prefix) else e.rid)}")
    if e.checkable:
        parts.append(f"checked={'true' if e.checked else 'false'}")
    for flag in ("editable", "scrollable", "clickable", "focused", "disabled"):
        if getattr(e, flag):
            parts.append(flag)
    if compact:
        return " ".join(parts)
    x1, y1, x2, y2 = e.bounds
    parts.append(f"bounds=[{x1},{y1}][{x2},{y2}]")
    return " ".join(parts)


def render_screen(app: str, elements: Sequence[UIElement], compact: bool = False) -> str:
    """The whole screen: a header naming the app, then one line per element (`compact`: the
    module docstring's short form)."""
    lines = [f"Current app: {app}"]
    lines += [render_element(i, e, app if compact else None) for i, e in enumerate(elements)]
    return "\n".join(lines)


_LINE = re.compile(r"^UI element (\d+): (\S+)(.*) bounds=\[(-?\d+),(-?\d+)\]\[(-?\d+),(-?\d+)\]$")
_COMPACT_LINE = re.compile(r"^\[(\d+)\] (\S+)(.*)$")
_FLAGS = ("editable", "scrollable", "clickable", "focused", "disabled")


def _parse_attrs(rest: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    dec = json.JSONDecoder()
    i = 0
    while i < len(rest):
        if rest[i] == " ":
            i += 1
            continue
        m = re.match(r"(text|desc|hint|id)=", rest[i:])
        if m:
            try:
                val, end = dec.raw_decode(rest, i + m.end())
            except json.JSONDecodeError:
                return None
            out[m.group(1)] = val
            i = end
            continue
        m = re.match(r"checked=(true|false)", rest[i:])
        if m:
            out["checked"] = m.group(1) == "true"
            i += m.end()
            continue
        m = re.match(r"([a-z]+)", rest[i:])
        if m and m.group(1) in _FLAGS:
            out[m.group(1)] = True
            i += m.end()
            continue
        return None
    return out


def parse_screen(text: str) -> tuple[str, list[UIElement]]:
    """Read a screen back: `(app, elements)`. Lines that are not element lines are skipped, so
    it accepts a whole observation (`Result: ...` line included). Never raises."""
    app = ""
    elements: list[UIElement] = []
    for line in text.split("\n"):
        if line.startswith("Current app: "):
            app = line[len("Current app: ") :].strip()
            elements = []
            continue
        m = _LINE.match(line)
        compact = m is None
        m = m or _COMPACT_LINE.match(line)
        if not m:
            continue
        attrs = _parse_attrs(m.group(3))
        if attrs is None:
            continue
        rid = attrs.get("id")
        if compact and rid is not None and ":" not in rid:
            rid = _short_rid(app) + rid
        bounds = (0, 0, 0, 0) if compact else (int(m.group(4)), int(m.group(5)), int(m.group(6)), int(m.group(7)))
        elements.append(
            UIElement(
                cls=m.group(2),
                bounds=bounds,
                text=attrs.get("text"),
                desc=attrs.get("desc"),
                hint=attrs.get("hint"),
                rid=rid,
                checkable="checked" in attrs,
                checked=bool(attrs.get("checked", False)),
                editable=bool(attrs.get("editable")),
                scrollable=bool(attrs.get("scrollable")),
                clickable=bool(attrs.get("clickable")),
                focused=bool(attrs.get("focused")),
                disabled=bool(attrs.get("disabled")),
            )
        )
    return app, elements
