"""The JSON action grammar (AndroidWorld, `android_world/env/json_action.py`), parsed and validated.

One JSON object per reply, taken after the last `Action:` or else the first balanced object.
Validation follows `JSONAction.__post_init__`: unknown `action_type` is invalid; `index` is
coerced with `int()`; `index` together with `x`/`y` is invalid; a direction outside
up/down/left/right is invalid; `keycode` must start with `KEYCODE_`. Unknown keys are ignored
and reported. Pure functions: `parse_action(text) -> DeviceAction | str (the error)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from creditgym.envs.parsing import extract_json_object

__all__ = ["ACTION_TYPES", "DIRECTIONS", "KNOWN_KEYS", "DeviceAction", "parse_action"]

ACTION_TYPES = (
    "click", "double_tap", "long_press", "input_text", "keyboard_enter", "scroll", "swipe",
    "navigate_home", "navigate_back", "open_app", "wait", "answer", "status",
)
DIRECTIONS = ("up", "down", "left", "right")
KNOWN_KEYS = ("action_type", "index", "x", "y", "text", "direction", "app_name", "goal_status", "keycode", "clear_text")
GOAL_STATUSES = ("complete", "infeasible")
_NEEDS_TARGET = ("click", "double_tap", "long_press")


@dataclass(frozen=True)
class DeviceAction:
    """A validated action. `index` or (`x`, `y`) locate the target element when one is needed."""

    action_type: str
    index: int | None = None
    x: int | None = None
    y: int | None = None
    text: str | None = None
    direction: str | None = None
    app_name: str | None = None
    goal_status: str | None = None
    keycode: str | None = None
    clear_text: bool = True
    ignored_keys: tuple[str, ...] = ()


def _json_part(text: str) -> str:
    cut = text.rfind("Action:")
    return text[cut + len("Action:") :] if cut >= 0 else text


def _to_int(v: Any, name: str) -> int | str:
    """`int()` coercion as AndroidWorld does ("3", 3.0 -> 3); an error string otherwise."""
    if isinstance(v, bool):
        return f"{name} must be an integer, got {v!r}"
    try:
        if isinstance(v, float):
            if not math.isfinite(v):
                return f"{name} must be a finite integer, got {v!r}"
            if v != int(v):
                return f"{name} must be an integer, got {v!r}"
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return f"{name} must be an integer, got {v!r}"


def parse_action(text: str) -> DeviceAction | str:
    """Parse one reply into a DeviceAction, or return the reason it is invalid. Never raises."""
    obj, err = extract_json_object(_json_part(text))
    if err is not None:
        return f"no valid JSON action object ({err})"
    if not isinstance(obj, dict):
        return "the action must be a JSON object"
    kind = obj.get("action_type")
    if not isinstance(kind, str) or kind not in ACTION_TYPES:
        return f"unknown action_type {kind!r}; use one of {', '.join(ACTION_TYPES)}"
    ignored = tuple(sorted(str(k) for k in obj if k not in KNOWN_KEYS))
    fields: dict[str, Any] = {"action_type": kind, "ignored_keys": ignored}
    for key in ("index", "x", "y"):
        if obj.get(key) is not None:
            v = _to_int(obj[key], key)
            if isinstance(v, str):
                return v
            fields[key] = v
    if "index" in fields and ("x" in fields or "y" in fields):
        return "give either index or x and y, not both"
    if ("x" in fields) != ("y" in fields):
        return "give both x and y"
    for key in ("text", "app_name", "goal_status", "direction", "keycode"):
        sv = obj.get(key)
        if sv is not None:
            if not isinstance(sv, str):
                return f"{key} must be a string, got {type(sv).__name__}"
            fields[key] = sv
    if "clear_text" in obj and obj["clear_text"] is not None:
        if not isinstance(obj["clear_text"], bool):
            return "clear_text must be true or false"
        fields["clear_text"] = obj["clear_text"]
    if "direction" in fields and fields["direction"] not in DIRECTIONS:
        return f"direction must be one of up, down, left, right, got {fields['direction']!r}"
    if "keycode" in fields and not fields["keycode"].startswith("KEYCODE_"):
        return f"keycode must start with KEYCODE_, got {fields['keycode']!r}"
    problem = _required(kind, fields)
    if problem:
        return problem
    return DeviceAction(**fields)


def _required(kind: str, f: dict[str, Any]) -> str:
    if kind in _NEEDS_TARGET and "index" not in f and "x" not in f:
        return f"{kind} needs an index (or x and y)"
    if kind == "input_text" and "text" not in f:
        return 'input_text needs "text"'
    if kind in ("scroll", "swipe") and "direction" not in f:
        return f'{kind} needs "direction": up, down, left or right'
    if kind == "open_app" and not f.get("app_name", "").strip():
        return 'open_app needs "app_name"'
    if kind == "answer" and not f.get("text", "").strip():
        return 'answer needs a non-empty "text"'
    if kind == "status" and f.get("goal_status") not in GOAL_STATUSES:
        return 'status needs "goal_status": "complete" or "infeasible"'
    return ""
