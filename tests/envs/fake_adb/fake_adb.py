"""A fake `adb` executable for the Device env's adb backend tests (stdlib only, fast to start).

It serves a tiny phone (Home and a Settings list mirroring the simulator's) from the JSON state
file named by FAKE_ADB_STATE and appends every argv it receives to FAKE_ADB_LOG (one JSON list
a line). Faults, via environment variables:
    FAKE_ADB_FAULT        offline | null_root | hang | truncated_xml | garbage | exit1
    FAKE_ADB_FAULT_CMD    substring of the joined argv that triggers it (default: per fault)
    FAKE_ADB_FAULT_TIMES  fail this many matching calls, then behave (default: always)
    FAKE_ADB_DEVICES      what `adb devices` lists (default "emulator-5554\\tdevice")
"""

import json
import os
import sys
import time
from xml.sax.saxutils import quoteattr

APPS = ["Settings", "Contacts", "Messages", "Search", "Shop", "Camera", "Clock", "Photos"]
ROWS = [
    ("airplane", "Airplane mode", "airplane_mode_on"), ("wifi", "Wi-Fi", "wifi_on"), ("bluetooth", "Bluetooth", "bluetooth_on"),
    ("dark_theme", "Dark theme", "ui_night_mode"), ("dnd", "Do not disturb", "zen_mode"),
    ("notifications", "Notifications", None), ("display", "Display", None), ("storage", "Storage", None),
    ("battery", "Battery", None), ("about", "About phone", None),
]
DEFAULT_FAULT_CMD = {"offline": "uiautomator", "null_root": "uiautomator", "hang": "uiautomator", "exit1": "uiautomator",
                     "truncated_xml": "exec-out", "garbage": "exec-out"}


def node(cls, bounds, text="", rid="", desc="", clickable=False, checkable=False, checked=False, scrollable=False, package="", children=""):
    x1, y1, x2, y2 = bounds
    a = {"index": "0", "text": text, "resource-id": rid, "class": cls, "package": package, "content-desc": desc,
         "checkable": str(checkable).lower(), "checked": str(checked).lower(), "clickable": str(clickable).lower(),
         "enabled": "true", "focusable": str(clickable).lower(), "focused": "false", "scrollable": str(scrollable).lower(),
         "long-clickable": "false", "password": "false", "selected": "false", "bounds": f"[{x1},{y1}][{x2},{y2}]"}
    attrs = " ".join(f"{k}={quoteattr(v)}" for k, v in a.items())
    return f"<node {attrs}>{children}</node>" if children else f"<node {attrs} />"


def screen_xml(st):
    if st["screen"] == "home":
        pkg = "com.android.launcher3"
        kids = node("android.widget.TextView", (0, 0, 1080, 96), "09:41", "android:id/clock", package=pkg)
        icons = ""
        for j, name in enumerate(APPS):
            x1, y1 = (j % 4) * 270, 400 + (j // 4) * 320
            icons += node("android.widget.TextView", (x1, y1, x1 + 270, y1 + 320), name, f"launcher:id/{name.lower()}", desc=name, clickable=True, package=pkg)
        kids += node("android.widget.GridLayout", (0, 400, 1080, 1040), package=pkg, children=icons)
    else:
        pkg = "com.android.settings"
        kids = node("android.widget.TextView", (0, 0, 1080, 96), "09:41", "android:id/clock", package=pkg)
        kids += node("android.widget.LinearLayout", (0, 96, 1080, 264), package=pkg,
                     children=node("android.widget.TextView", (168, 96, 1080, 264), "Settings", "settings:id/title", package=pkg))
        rows = ""
        for slot, (key, label, setting) in enumerate(ROWS[st["scroll"]: st["scroll"] + 8]):
            b = (0, 264 + 200 * slot, 1080, 464 + 200 * slot)
            if setting is not None:
                rows += node("android.widget.Switch", b, label, f"settings:id/{key}", clickable=True, checkable=True,
                             checked=st["settings"].get(setting, "0") == "1", package=pkg)
            else:
                rows += node("android.widget.TextView", b, label, f"settings:id/{key}", clickable=True, package=pkg)
        kids += node("androidx.recyclerview.widget.RecyclerView", (0, 264, 1080, 1864), rid="settings:id/list", scrollable=True, package=pkg, children=rows)
        kids += node("android.view.View", (0, 0, 0, 0), package=pkg)  # zero-area: filtered out
        kids += node("android.widget.TextView", (0, 2500, 1080, 2600), "below the screen", package=pkg)  # off-screen: filtered out
    root = node("android.widget.FrameLayout", (0, 0, 1080, 2400), package=pkg, children=kids)
    return f"<?xml version='1.0' encoding='UTF-8' standalone='yes' ?><hierarchy rotation=\"0\">{root}</hierarchy>"


def tap(st, x, y):
    if st["screen"] == "home":
        j = (x // 270) + 4 * ((y - 400) // 320) if 400 <= y < 1040 else -1
        if j == 0:
            st["screen"], st["scroll"] = "settings", 0
        return
    if 264 <= y < 1864:
        slot = (y - 264) // 200
        rows = ROWS[st["scroll"]: st["scroll"] + 8]
        if slot < len(rows) and rows[slot][2] is not None:
            k = rows[slot][2]
            st["settings"][k] = "0" if st["settings"].get(k, "0") == "1" else "1"


def shell(st, cmd):
    if cmd[:2] == ["wm", "size"]:
        return "Physical size: 1080x2400\n"
    if cmd[:2] == ["uiautomator", "dump"]:
        st["dump"] = screen_xml(st)
        return "UI hierchary dumped to: /sdcard/window_dump.xml\n"
    if cmd[:2] == ["input", "tap"]:
        tap(st, int(cmd[2]), int(cmd[3]))
    elif cmd[:2] == ["input", "keyevent"]:
        if cmd[2] in ("3", "4"):
            st["screen"] = "home"
    elif cmd[:2] == ["input", "swipe"] and st["screen"] == "settings":
        y1, y2 = int(cmd[3]), int(cmd[5])
        if y1 > y2:
            st["scroll"] = min(st["scroll"] + 6, len(ROWS) - 8)
        elif y1 < y2:
            st["scroll"] = max(st["scroll"] - 6, 0)
    elif cmd[:2] == ["input", "text"]:
        st.setdefault("typed", []).append(cmd[2])
    elif cmd[:1] == ["monkey"]:
        if "com.android.settings" in cmd:
            st["screen"], st["scroll"] = "settings", 0
    elif cmd[:3] == ["settings", "get", "global"]:
        return st["settings"].get(cmd[3], "null") + "\n"
    else:
        raise KeyError(" ".join(cmd))
    return ""


class Hang(Exception):
    """Raised instead of sleeping when the fake runs in-process (tests call `handle` directly)."""


def fault(st, argv, environ):
    kind = environ.get("FAKE_ADB_FAULT", "")
    trigger = environ.get("FAKE_ADB_FAULT_CMD") or DEFAULT_FAULT_CMD.get(kind, "")
    if not kind or trigger not in " ".join(argv):
        return None
    times = int(environ.get("FAKE_ADB_FAULT_TIMES", "-1"))
    if times >= 0:
        if st.get("faults", 0) >= times:
            return None
        st["faults"] = st.get("faults", 0) + 1
    return kind


def handle(argv, environ, in_process=False):
    """One adb invocation: `(returncode, stdout, stderr)`; state and log files as in main()."""
    with open(environ["FAKE_ADB_LOG"], "a") as f:
        f.write(json.dumps(argv) + "\n")
    if argv == ["devices"]:
        return 0, "List of devices attached\n" + environ.get("FAKE_ADB_DEVICES", "emulator-5554\tdevice") + "\n\n", ""
    path = environ["FAKE_ADB_STATE"]
    with open(path) as f:
        st = json.load(f)
    rc, out, err = 0, "", ""
    kind = fault(st, argv, environ)
    if kind == "hang":
        with open(path, "w") as f:
            json.dump(st, f)
        if in_process:
            raise Hang(" ".join(argv))
        time.sleep(30)
    if kind == "offline":
        rc, err = 1, "error: device offline\n"
    elif kind == "exit1":
        rc, err = 1, "error: closed\n"
    elif kind == "null_root" and "uiautomator" in argv:
        out = "ERROR: null root node returned by UiTestAutomationBridge.\n"
    elif argv[:2] != ["-s", "emulator-5554"]:
        rc, err = 1, "error: device not found\n"
    elif argv[2:3] == ["exec-out"]:
        out = st.get("dump", "")
        if kind == "truncated_xml":
            out = out[: len(out) // 2]
        elif kind == "garbage":
            out = "\x00\x01 this is not xml <<<"
    elif argv[2:3] == ["shell"]:
        try:
            out = shell(st, argv[3:])
        except KeyError as e:
            rc, err = 1, f"/system/bin/sh: unknown command {e}\n"
    else:
        rc, err = 1, "adb: unknown command\n"
    with open(path, "w") as f:
        json.dump(st, f)
    return rc, out, err


def main():
    rc, out, err = handle(sys.argv[1:], os.environ)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main())
