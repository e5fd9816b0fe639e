"""The adb backend: the same actions and screen text on a real device or emulator.

Observation: `adb -s S shell uiautomator dump /sdcard/window_dump.xml`, then
`adb -s S exec-out cat /sdcard/window_dump.xml`; from the `<node>` elements keep leaves, nodes
with a content-desc and scrollable nodes (AndroidWorld's `forest_to_ui_elements` rule), minus
zero-area and off-screen ones. Actions become `input tap/swipe/text/keyevent` and `monkey`.
Every command is an argv list run by `subprocess.run(timeout=)`, never a shell string; note that
`adb shell` joins its arguments into one string for the device's shell, hence `escape_input_text`.
`device offline`, `ERROR: null root node` and timeouts are retried (3 attempts), then raise
`BackendError`, which the env turns into a `Device error: ...` observation.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from creditgym.envs.base import BackendError, Task
from creditgym.envs.device.actions import DeviceAction
from creditgym.envs.device.screen import UIElement
from creditgym.envs.device.tasks import answer_matches

__all__ = ["DEFAULT_PACKAGES", "AdbSession", "elements_to_xml", "escape_input_text", "parse_uiautomator_xml"]

log = logging.getLogger(__name__)

DEFAULT_PACKAGES = {
    "home": "com.android.launcher3",
    "settings": "com.android.settings",
    "contacts": "com.android.contacts",
    "messages": "com.android.messaging",
    "search": "com.android.quicksearchbox",
    "browser": "com.android.browser",
    "camera": "com.android.camera2",
    "clock": "com.android.deskclock",
}
# built-in settings tasks: (setting, label in the goal, `settings get global` key)
BUILTIN_SETTINGS = (("airplane", "Airplane mode", "airplane_mode_on"), ("wifi", "Wi-Fi", "wifi_on"), ("bluetooth", "Bluetooth", "bluetooth_on"))
ATTEMPTS = 3
_SAFE = re.compile(r"[A-Za-z0-9_.,:/@+=-]")
_BOUNDS = re.compile(r"\[(-?\d+),(-?\d+)\]\[(-?\d+),(-?\d+)\]")


def escape_input_text(text: str) -> str | None:
    """Text for `adb shell input text`: spaces as `%s`, every other non-safe character
    backslash-escaped for the device shell. None when the text cannot be typed (non-ASCII or
    control characters: `input text` only types printable ASCII)."""
    if any(not (32 <= ord(c) < 127) for c in text):
        return None
    return "".join("%s" if c == " " else (c if _SAFE.fullmatch(c) else "\\" + c) for c in text)


def parse_uiautomator_xml(xml: str, width: int, height: int) -> tuple[str, list[UIElement]]:
    """`(package, elements)` from a uiautomator dump; raises ValueError on malformed XML."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise ValueError(f"malformed uiautomator XML: {e}") from e
    package, out = "", []
    for node in root.iter("node"):
        a = node.attrib
        package = package or a.get("package", "")
        leaf = node.find("node") is None
        desc = a.get("content-desc") or None
        scrollable = a.get("scrollable") == "true"
        if not (leaf or desc or scrollable):
            continue
        m = _BOUNDS.fullmatch(a.get("bounds", ""))
        if m is None:
            continue
        x1, y1, x2, y2 = (int(v) for v in m.groups())
        if x2 <= x1 or y2 <= y1 or x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            continue
        cls = a.get("class", "View").rsplit(".", 1)[-1]
        checkable = a.get("checkable") == "true"
        out.append(UIElement(
            cls=cls, bounds=(x1, y1, x2, y2), text=a.get("text") or None, desc=desc, hint=a.get("hint") or None,
            rid=a.get("resource-id") or None, checkable=checkable, checked=checkable and a.get("checked") == "true",
            editable=cls.endswith("EditText"), scrollable=scrollable, clickable=a.get("clickable") == "true",
            focused=a.get("focused") == "true", disabled=a.get("enabled", "true") == "false",
        ))
    if not package:
        raise ValueError("uiautomator XML holds no <node> with a package")
    return package, out


def elements_to_xml(elements: Sequence[UIElement], package: str, width: int = 1080, height: int = 2400) -> str:
    """A uiautomator-style dump of `elements` (flat under one root layout), for tests and fakes."""
    def attrs(e: UIElement) -> str:
        x1, y1, x2, y2 = e.bounds
        pairs = {
            "text": e.text or "", "resource-id": e.rid or "", "class": f"android.widget.{e.cls}", "package": package,
            "content-desc": e.desc or "", "checkable": str(e.checkable).lower(), "checked": str(e.checked).lower(),
            "clickable": str(e.clickable).lower(), "enabled": str(not e.disabled).lower(), "focused": str(e.focused).lower(),
            "scrollable": str(e.scrollable).lower(), "bounds": f"[{x1},{y1}][{x2},{y2}]",
        }
        if e.hint:
            pairs["hint"] = e.hint
        return " ".join(f"{k}={quoteattr(v)}" for k, v in pairs.items())

    body = "".join(f"<node {attrs(e)} />" for e in elements)
    return (f"<?xml version='1.0' encoding='UTF-8' standalone='yes' ?><hierarchy rotation=\"0\"><node class=\"android.widget.FrameLayout\" "
            f"package={quoteattr(package)} bounds=\"[0,0][{width},{height}]\">{body}</node></hierarchy>")


def run_process(argv: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess:
    """Run one argv list (never a shell string); tests replace this with an in-process fake."""
    return subprocess.run(list(argv), capture_output=True, text=True, errors="replace", timeout=timeout_s)


class AdbSession:
    """One device over adb: runs commands, reads screens, executes actions, checks success."""

    wait_s = 1.0  # the `wait` action's sleep; tests set it to 0
    attempts = ATTEMPTS  # tries per command (offline, null root node, timeout) and per screen read

    def __init__(self, adb_path: str, serial: str | None, app_packages: Mapping[str, str] | None,
                 timeout_s: float, tasks_path: str | None):
        exe = shutil.which(adb_path) or (adb_path if os.path.isfile(adb_path) and os.access(adb_path, os.X_OK) else None)
        if exe is None:
            raise FileNotFoundError(f"adb executable {adb_path!r} not found: install Android platform-tools or pass adb_path=/path/to/adb")
        self.exe, self.timeout_s = exe, float(timeout_s)
        self.packages = {**DEFAULT_PACKAGES, **{k.lower(): v for k, v in (app_packages or {}).items()}}
        self.answers: list[str] = []
        self.serial = self._pick_serial(serial)
        size = self.run(["shell", "wm", "size"])
        m = re.findall(r"(?:Physical|Override) size: (\d+)x(\d+)", size)
        if not m:
            raise RuntimeError(f"`adb shell wm size` printed {size[:200]!r}, expected 'Physical size: WxH'; is the device booted?")
        self.width, self.height = int(m[-1][0]), int(m[-1][1])
        self.tasks = _load_tasks(tasks_path) if tasks_path else _builtin_tasks()

    # ------------------------------------------------------------------ commands
    def _pick_serial(self, serial: str | None) -> str:
        try:
            out = run_process([self.exe, "devices"], self.timeout_s)
        except (subprocess.TimeoutExpired, OSError) as e:
            raise RuntimeError(f"`adb devices` failed ({e}); is the adb server running? try `adb start-server`") from e
        ready = [ln.split()[0] for ln in out.stdout.splitlines()[1:] if len(ln.split()) >= 2 and ln.split()[1] == "device"]
        if serial is None and ready:
            return ready[0]
        if serial is not None and serial in ready:
            return serial
        raise RuntimeError(f"no adb device {'named ' + repr(serial) + ' ' if serial else ''}in state 'device' "
                           f"(`adb devices` printed {out.stdout.strip()[:200]!r}); start an emulator or pass serial=...")

    def run(self, args: Sequence[str]) -> str:
        """Run `adb -s SERIAL *args` (argv list); retry offline / null-root / timeout; raise BackendError."""
        argv = [self.exe, "-s", self.serial, *args]
        kind, detail = "", ""
        for _ in range(self.attempts):
            try:
                proc = run_process(argv, self.timeout_s)
            except subprocess.TimeoutExpired:
                kind, detail = "timeout", f"{' '.join(args[:3])} took over {self.timeout_s:g} s"
                continue
            except OSError as e:
                raise BackendError("exec", str(e)) from e
            text = proc.stdout + proc.stderr
            if "offline" in text and proc.returncode != 0:
                kind, detail = "offline", "device offline"
                continue
            if "null root node" in text:
                kind, detail = "null_root", "ERROR: null root node"
                continue
            if proc.returncode != 0:
                raise BackendError(f"exit_{proc.returncode}", proc.stderr.strip()[:200] or "adb failed")
            return proc.stdout
        log.warning("adb %s failed %d times: %s", args[:3], self.attempts, detail)
        raise BackendError(kind, detail)

    def observe(self, go_home: bool = False) -> tuple[str, list[UIElement]]:
        """Dump and parse the screen; `(app name, elements)`."""
        self.answers = [] if go_home else self.answers
        if go_home:
            self.run(["shell", "input", "keyevent", "3"])
        error = ""
        for _ in range(self.attempts):
            self.run(["shell", "uiautomator", "dump", "/sdcard/window_dump.xml"])
            xml = self.run(["exec-out", "cat", "/sdcard/window_dump.xml"])
            try:
                package, elements = parse_uiautomator_xml(xml, self.width, self.height)
            except ValueError as e:
                error = str(e)
                continue
            return self.app_of(package), elements
        raise BackendError("bad_xml", error[:200])

    def app_of(self, package: str) -> str:
        for name, pkg in sorted(self.packages.items()):
            if pkg == package:
                return name.capitalize()
        return package

    # ------------------------------------------------------------------ actions
    def act(self, a: DeviceAction, elements: Sequence[UIElement]) -> str:
        """Execute one action (not `answer` / `status`, which the env keeps)."""
        kind = a.action_type
        target = elements[a.index] if a.index is not None else None
        where = (f'UI element {a.index} ({target.cls} "{target.label}")' if target is not None else f"({a.x}, {a.y})")
        if kind in ("click", "double_tap", "long_press"):
            x, y = target.center if target is not None else (a.x or 0, a.y or 0)
            if kind == "long_press":
                self.run(["shell", "input", "swipe", str(x), str(y), str(x), str(y), "1000"])
                return f"Long-pressed {where}."
            for _ in range(2 if kind == "double_tap" else 1):
                self.run(["shell", "input", "tap", str(x), str(y)])
            return f"Clicked {where}."
        if kind == "input_text":
            return self._type(a, target)
        keys = {"keyboard_enter": ("66", "Pressed Enter."), "navigate_home": ("3", "Went to the home screen."), "navigate_back": ("4", "Went back.")}
        if kind in keys:
            self.run(["shell", "input", "keyevent", keys[kind][0]])
            return keys[kind][1]
        if kind in ("scroll", "swipe"):
            direction = a.direction or "down"
            if kind == "swipe":  # finger direction; a scroll names the content direction
                direction = {"up": "down", "down": "up", "left": "right", "right": "left"}[direction]
            self.run(["shell", "input", "swipe", *self._scroll_points(direction, target), "400"])
            return f"Scrolled {direction}." if kind == "scroll" else f"Swiped {a.direction}."
        if kind == "open_app":
            pkg = self.packages.get((a.app_name or "").strip().lower())
            if pkg is None:
                return f'No app named "{(a.app_name or "").strip()}".'
            self.run(["shell", "monkey", "-p", pkg, "-c", "android.intent.category.LAUNCHER", "1"])
            return f"Opened {(a.app_name or '').strip().capitalize()}."
        if kind == "wait":
            time.sleep(self.wait_s)
            return "Waited 1 second."
        raise ValueError(f"the adb backend does not execute {kind!r}")

    def _type(self, a: DeviceAction, target: UIElement | None) -> str:
        text = escape_input_text(a.text or "")
        if text is None:
            return "Nothing happened: adb can only type printable ASCII text (no emoji, accents or newlines)."
        if target is not None:
            x, y = target.center
            self.run(["shell", "input", "tap", str(x), str(y)])
            if a.clear_text and target.text:
                self.run(["shell", "input", "keyevent", "123", *(["67"] * len(target.text))])
        if text:
            self.run(["shell", "input", "text", text])
        self.run(["shell", "input", "keyevent", "66"])
        return f'Typed "{a.text}" into {"UI element " + str(a.index) if a.index is not None else "the focused field"}.'

    def _scroll_points(self, direction: str, target: UIElement | None) -> list[str]:
        """Finger path through the element (or screen) centre: content "down" = finger 75% -> 25%."""
        x1, y1, x2, y2 = target.bounds if target is not None else (0, 0, self.width, self.height)
        cx, cy, w, h = (x1 + x2) // 2, (y1 + y2) // 2, x2 - x1, y2 - y1
        hi_y, lo_y, hi_x, lo_x = y1 + 3 * h // 4, y1 + h // 4, x1 + 3 * w // 4, x1 + w // 4
        path = {"down": (cx, hi_y, cx, lo_y), "up": (cx, lo_y, cx, hi_y), "right": (hi_x, cy, lo_x, cy), "left": (lo_x, cy, hi_x, cy)}[direction]
        return [str(v) for v in path]

    # ------------------------------------------------------------------ tasks and success
    def new_task(self, rng: np.random.Generator, split: str, task_id: str | None) -> Task:
        """A task by id, else one drawn uniformly (real-device tasks are few and not split)."""
        self.answers = []
        if task_id is not None:
            key = task_id.rsplit("/", 1)[-1]
            if key not in self.tasks:
                raise ValueError(f"unknown adb task {task_id!r}; known keys: {sorted(self.tasks)[:10]}")
        else:
            keys = sorted(self.tasks)
            key = keys[int(rng.integers(len(keys)))]
        spec = self.tasks[key]
        return Task(f"device/{split}/{key}", split, prompt=spec["goal"], gold=tuple(spec.get("gold", ())), private=spec)

    def judge(self, task: Task, status: str | None) -> dict[str, float]:
        spec = task.private
        out = {"success": 0.0, "collateral": 0.0, "answered": float(bool(self.answers))}
        if spec.get("infeasible"):
            out["success"] = float(status == "infeasible")
            return out
        if status != "complete":
            return out
        ok = not task.gold or answer_matches(self.answers[-1] if self.answers else None, task.gold, bool(spec.get("numeric")))
        try:
            for check in spec.get("checks", ()):
                got = self.run(["shell", "settings", "get", check.get("namespace", "global"), check["setting"]]).strip()
                ok = ok and got == str(check["equals"])
        except BackendError as err:
            log.warning("adb success check failed: %s", err)
            return {**out, "backend_error": 1.0}
        out["success"] = float(ok)
        return out


def _builtin_tasks() -> dict[str, dict[str, Any]]:
    tasks = {}
    for name, label, key in BUILTIN_SETTINGS:
        for on in (True, False):
            tasks[f"adb.{name}.{'on' if on else 'off'}"] = {
                "goal": f"Turn {'on' if on else 'off'} {label}.", "checks": [{"setting": key, "namespace": "global", "equals": "1" if on else "0"}],
            }
    return tasks


def _load_tasks(path: str) -> dict[str, dict[str, Any]]:
    """JSONL, one task a line: {"goal": str, "checks": [{"setting", "namespace"?, "equals"}]?,
    "gold": [str]?, "numeric": bool?, "infeasible": bool?, "key": str?}."""
    tasks: dict[str, dict[str, Any]] = {}
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        try:
            spec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i + 1}: not JSON ({e})") from e
        if not isinstance(spec, dict) or not isinstance(spec.get("goal"), str):
            raise ValueError(f'{path}:{i + 1}: each task needs a "goal" string')
        for c in spec.get("checks", []):
            if not isinstance(c, dict) or "setting" not in c or "equals" not in c:
                raise ValueError(f'{path}:{i + 1}: each check needs "setting" and "equals"')
        if not spec.get("checks") and not spec.get("gold") and not spec.get("infeasible"):
            raise ValueError(f'{path}:{i + 1}: a task needs "checks", "gold" or "infeasible": true to be judged')
        tasks[str(spec.get("key", f"file.{i}"))] = spec
    if not tasks:
        raise ValueError(f"{path}: no tasks")
    return tasks
