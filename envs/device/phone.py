"""`Phone`: the simulator that executes AndroidWorld-style actions on a device state dict.

Each method applies one action and returns the effect sentence of the observation's `Result:`
line. Pop-ups are drawn from the generator passed in (the env's `np_random`) whenever a screen
opens, so they are fixed per task and action sequence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from creditgym.envs.device.apps import ROOT_SCREENS, Layout, build_elements, list_geometry
from creditgym.envs.device.screen import UIElement, render_screen
from creditgym.envs.device.state import APPS, SETTING_LABELS, initial_nav

__all__ = ["SCROLL_ROWS", "Phone"]

SCROLL_ROWS = 6
MAX_FIELD_CHARS = 200
_OPPOSITE = {"up": "down", "down": "up", "left": "right", "right": "left"}


def _describe(i: int, e: UIElement) -> str:
    label = e.label.replace('"', "'")
    return f'UI element {i} ({e.cls} "{label}")' if label else f"UI element {i} ({e.cls})"


class Phone:
    """Executes actions on `data` (a device state dict, edited in place)."""

    def __init__(self, data: dict[str, Any], layout: Layout, rng: np.random.Generator, popup_prob: float = 0.0):
        self.data = data
        self.layout = layout
        self.rng = rng
        self.popup_prob = float(popup_prob)
        self.n_popups = 0

    # ------------------------------------------------------------------ reading
    @property
    def nav(self) -> dict[str, Any]:
        return self.data["nav"]

    def elements(self) -> list[UIElement]:
        return build_elements(self.data, self.layout)

    def screen(self) -> str:
        return render_screen(self.nav["app"], self.elements())

    # ------------------------------------------------------------------ navigation
    def _maybe_popup(self) -> None:
        if self.popup_prob <= 0 or self.data["popup"] or self.nav["app"] == "Home":
            return
        if self.rng.random() >= self.popup_prob:
            return
        app = self.nav["app"]
        kinds = ["rate"]
        if not self.data["settings"]["permissions"].get(app, False):
            kinds.append("notify")
        if app == "Shop":
            kinds.append("banner")
        self.data["popup"] = kinds[int(self.rng.integers(len(kinds)))]
        self.n_popups += 1

    def _fields_for(self, screen: str, arg: str) -> dict[str, str]:
        if screen == "edit":
            return {"name": arg, "phone": self.data["contacts"].get(arg, "")}
        if screen == "product":
            return {"qty": "1"}
        if screen == "results":
            return {"query" if self.nav["app"] == "Search" else "shop_query": arg}
        return {}

    def _open(self, screen: str, arg: str) -> None:
        nav = self.nav
        stack = nav.setdefault("stack", [])
        stack.append([nav["screen"], nav["arg"], nav["scroll"], dict(nav["fields"]), nav["focus"]])
        nav.update(screen=screen, arg=arg, scroll=0, fields=self._fields_for(screen, arg), focus="")
        if screen == "thread":
            self._scroll_to_end()
        self._maybe_popup()

    def _scroll_to_end(self) -> None:
        """Conversations open at the newest message, as messaging apps do."""
        n, cap = list_geometry(self.data, self.layout)
        self.nav["scroll"] = max(0, n - cap)

    def open_app(self, name: str) -> str:
        match = [a for a in APPS if a.lower() == name.strip().lower()]
        if not match:
            return f'No app named "{name.strip()}".'
        app = match[0]
        self.data["popup"] = ""
        self.data["nav"] = {**initial_nav(), "app": app, "screen": ROOT_SCREENS[app], "stack": []}
        self._maybe_popup()
        return f"Opened {app}."

    def navigate_home(self) -> str:
        self.data["popup"] = ""
        self.data["nav"] = initial_nav()
        return "Went to the home screen."

    def navigate_back(self) -> str:
        if self.data["popup"]:
            self.data["popup"] = ""
            return "Dismissed the pop-up."
        stack = self.nav.get("stack") or []
        if stack:
            screen, arg, scroll, fields, focus = stack.pop()
            self.nav.update(screen=screen, arg=arg, scroll=scroll, fields=fields, focus=focus)
            return "Went back."
        if self.nav["app"] != "Home":
            self.data["nav"] = initial_nav()
            return "Went back to the home screen."
        return "Nothing happened."

    # ------------------------------------------------------------------ element actions
    def click(self, i: int) -> str:
        e = self.elements()[i]
        if not e.clickable or e.disabled:
            return "Nothing happened."
        effect = self._run(e.action)
        return f"Clicked {_describe(i, e)}." + (f" {effect}" if effect else "")

    def long_press(self, i: int) -> str:
        e = self.elements()[i]
        if e.editable:
            self.nav["focus"] = e.action[1]
        return f"Long-pressed {_describe(i, e)}."

    def input_text(self, i: int, text: str, clear: bool = True) -> str:
        e = self.elements()[i]
        if not e.editable:
            return f"Nothing happened: {_describe(i, e)} is not editable."
        field = e.action[1]
        old = self.nav["fields"].get(field, "")
        value = (text if clear else old + text)[:MAX_FIELD_CHARS]
        self.nav["fields"][field] = value
        self.nav["focus"] = field
        shown = value.replace('"', "'").replace("\n", " ")
        effect = f'Typed "{shown}" into {_describe(i, e).split(" (")[0]}.'
        after = self.keyboard_enter()
        return effect if after == "Nothing happened." else f"{effect} {after}"

    def keyboard_enter(self) -> str:
        field = self.nav["focus"]
        if field in ("query", "shop_query") and not self.data["popup"]:
            return self._run(("submit", field)) or "Nothing happened."
        return "Nothing happened."

    def scroll(self, direction: str) -> str:
        """Content direction: "down" reveals what is below (AndroidWorld's convention)."""
        if self.data["popup"] in ("rate", "notify") or direction in ("left", "right"):
            return "Nothing happened."
        n, cap = list_geometry(self.data, self.layout)
        old = self.nav["scroll"]
        step = SCROLL_ROWS if direction == "down" else -SCROLL_ROWS
        new = max(0, min(old + step, max(0, n - cap)))
        if new == old:
            return "Nothing happened."
        self.nav["scroll"] = new
        return f"Scrolled {direction}."

    def swipe(self, direction: str) -> str:
        """Finger direction: swiping up scrolls the content down."""
        return self.scroll(_OPPOSITE[direction])

    # ------------------------------------------------------------------ click handlers
    def _run(self, action: tuple[Any, ...]) -> str:
        if not action:
            return ""
        kind, args = action[0], action[1:]
        d, nav = self.data, self.nav
        if kind == "noop":
            return ""
        if kind == "back":
            return self.navigate_back()
        if kind == "open_app":
            return self.open_app(args[0])
        if kind == "goto":
            self._open(args[0], args[1])
            return ""
        if kind == "focus":
            nav["focus"] = args[0]
            return ""
        if kind == "toggle":
            d["settings"][args[0]] = not d["settings"][args[0]]
            return f"{SETTING_LABELS[args[0]]} is now {'on' if d['settings'][args[0]] else 'off'}."
        if kind == "perm":
            perms = d["settings"]["permissions"]
            perms[args[0]] = not perms[args[0]]
            return f"Notifications for {args[0]} are now {'on' if perms[args[0]] else 'off'}."
        if kind == "popup_dismiss" or kind == "banner_close":
            d["popup"] = ""
            return "Dismissed the pop-up."
        if kind == "popup_allow":
            d["settings"]["permissions"][nav["app"]] = True
            d["popup"] = ""
            return f"Allowed notifications for {nav['app']}."
        if kind == "submit":
            value = nav["fields"].get(args[0], "").strip()
            if not value:
                return ""
            self._open("results", value)
            return f'Searched for "{value}".'
        return self._run_edit(kind, args)

    def _run_edit(self, kind: str, args: tuple[Any, ...]) -> str:
        d, nav = self.data, self.nav
        if kind == "save_contact":
            name, phone = nav["fields"].get("name", "").strip(), nav["fields"].get("phone", "").strip()
            if not name:
                return "Nothing happened: the name is empty."
            old = nav["arg"]
            if old and old != name:
                d["contacts"].pop(old, None)
            d["contacts"][name] = phone
            nav["stack"] = [["list", "", 0, {}, ""]]
            nav.update(screen="detail", arg=name, scroll=0, fields={}, focus="")
            return f"Saved contact {name}."
        if kind == "delete_contact":
            d["contacts"].pop(args[0], None)
            self.navigate_back()
            return f"Deleted contact {args[0]}."
        if kind == "send":
            text = nav["fields"].get("compose", "")
            if not text.strip():
                return "Nothing happened: the message is empty."
            d["threads"].setdefault(nav["arg"], []).append(["out", text])
            nav["fields"]["compose"] = ""
            self._scroll_to_end()
            return "Sent the message."
        if kind in ("add_cart", "buy_now"):
            raw = nav["fields"].get("qty", "").strip()
            qty = int(raw) if raw.isdigit() else 0
            if not 1 <= qty <= 99:
                return "Nothing happened: enter a quantity from 1 to 99."
            if kind == "buy_now":
                d["shop"]["orders"].append([[args[0], qty]])
                return f"Ordered {qty} × {args[0]}."
            cart = d["shop"]["cart"]
            cart[args[0]] = cart.get(args[0], 0) + qty
            return f"Added {qty} × {args[0]} to the cart."
        if kind == "remove_cart":
            d["shop"]["cart"].pop(args[0], None)
            return f"Removed {args[0]} from the cart."
        if kind == "checkout":
            cart = d["shop"]["cart"]
            if not cart:
                return "Nothing happened: the cart is empty."
            d["shop"]["orders"].append(sorted([k, v] for k, v in cart.items()))
            d["shop"]["cart"] = {}
            return "Placed an order."
        raise ValueError(f"unknown UI action {kind!r}")
