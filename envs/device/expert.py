"""Scripted expert and random baseline for the Device family (ENVS.md section 4, "Expert").

Both read only `ctx.obs_texts` / `ctx.action_texts`. The expert parses the goal (the public
templates of `creditgym.envs.device.tasks`) and the current screen, dismisses pop-ups
(Not now / Don't allow / Close), opens the app it needs, finds elements by text (at most five
scrolls), acts, checks the effect line, answers with values read off earlier screens, and ends
with `status`. Being stateless, it re-derives what it knows from the whole history each turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import numpy as np

from creditgym.envs.device.screen import UIElement, parse_screen
from creditgym.registry import History

__all__ = ["device_expert", "device_random"]

APPS = ("Settings", "Contacts", "Messages", "Search", "Shop")
DISMISS = ("Not now", "Don't allow", "Close")
MAX_SCROLLS = 5
_FOUNDER = (
    re.compile(r"^(?P<org>.+) was founded by (?P<who>.+) in \d+\.$"),
    re.compile(r"^(?P<who>.+) founded (?P<org>.+) in \d+\.$"),
    re.compile(r"^The founder of (?P<org>.+) is (?P<who>.+)\.$"),
)


def _act(kind: str, **kw: object) -> str:
    return "Action: " + json.dumps({"action_type": kind, **kw}, ensure_ascii=False)


class _View:
    """The history as the expert sees it: goal, current screen, earlier screens and effects."""

    def __init__(self, ctx: History):
        m = re.search(r"Goal: (.*)", ctx.obs_texts[0]) if ctx.obs_texts else None
        self.goal = m.group(1).strip() if m else ""
        self.obs = ctx.obs_texts
        self.actions = ctx.action_texts
        self.app, self.els = parse_screen(ctx.obs_texts[-1]) if ctx.obs_texts else ("", [])
        self.history = "\n".join(ctx.obs_texts[1:])

    def find(self, pred: Callable[[UIElement], bool]) -> int | None:
        return next((i for i, e in enumerate(self.els) if pred(e)), None)

    def by_text(self, text: str) -> int | None:
        return self.find(lambda e: e.text == text)

    def by_rid(self, rid: str) -> UIElement | None:
        i = self.find(lambda e: e.rid == rid)
        return self.els[i] if i is not None else None

    def title(self) -> str:
        t = self.by_rid(f"{self.app.lower()}:id/title")
        return (t.text or "") if t else ""

    def last_answer(self) -> str | None:
        for a in reversed(self.actions):
            if '"answer"' in a:
                _, _, body = a.rpartition("Action:")
                try:
                    obj = json.loads(body.strip() or a)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict) and obj.get("action_type") == "answer":
                    return str(obj.get("text"))
        return None

    def seen(self, effect: str) -> bool:
        return effect in self.history

    def can_scroll(self) -> bool:
        if not any(e.scrollable for e in self.els):
            return False
        n = 0
        for a in reversed(self.actions):
            if '"scroll"' not in a or '"down"' not in a:
                break
            n += 1
        if n >= MAX_SCROLLS:
            return False
        if n and len(self.obs) >= 2 and parse_screen(self.obs[-1])[1] == parse_screen(self.obs[-2])[1]:
            return False
        return True

    def screens(self) -> list[tuple[str, list[UIElement]]]:
        return [parse_screen(o) for o in self.obs]


def _open(v: _View, app: str) -> str | None:
    return None if v.app == app else _act("open_app", app_name=app)


def _find_or_scroll(v: _View, idx: int | None) -> str:
    """Click the found element, else scroll down, else give up (infeasible)."""
    if idx is not None:
        return _act("click", index=idx)
    if v.can_scroll():
        return _act("scroll", direction="down")
    return _act("status", goal_status="infeasible")


def _type(v: _View, hint: str, text: str) -> str | None:
    """Type `text` into the field with `hint` unless it already holds it; None when it does."""
    i = v.find(lambda e: e.editable and e.hint == hint)
    if i is None:
        return None
    if (v.els[i].text or "") == text:
        return None
    return _act("input_text", index=i, text=text)


# ---------------------------------------------------------------------- app flows
def _toggle(v: _View, on: bool, label: str) -> str:
    step = _open(v, "Settings")
    if step:
        return step
    i = v.find(lambda e: e.checkable and e.text == label)
    if i is not None and v.els[i].checked == on:
        return _act("status", goal_status="complete")
    return _find_or_scroll(v, i)


def _read_thread(v: _View, name: str) -> str | None:
    """The last message `name` sent, from any earlier view of their thread."""
    for app, els in reversed(v.screens()):
        title = next((e.text for e in els if e.rid == "messages:id/title"), None)
        if app == "Messages" and title == name:
            got = [e.text for e in els if e.desc == "Received" and e.text is not None]
            if got:
                return got[-1]
    return None


def _to_thread(v: _View, name: str) -> str | None:
    """Navigate to `name`'s thread; None once there."""
    step = _open(v, "Messages")
    if step:
        return step
    if v.by_rid("messages:id/compose") is not None:
        return None if v.title() == name else _act("navigate_back")
    return _find_or_scroll(v, v.find(lambda e: e.rid == "messages:id/conversation" and e.text == name))


def _sent(v: _View, name: str, text: str) -> bool:
    """Whether the latest view of `name`'s thread ends with `text` as a sent message."""
    for app, els in reversed(v.screens()):
        if app == "Messages" and any(e.rid == "messages:id/title" and e.text == name for e in els):
            sent = [e.text for e in els if e.desc == "Sent"]
            return bool(sent) and (sent[-1] or "").strip() == text.strip()
    return False


def _send(v: _View, name: str, text: str) -> str:
    if _sent(v, name, text):
        return _act("status", goal_status="complete")
    step = _to_thread(v, name)
    if step:
        return step
    return _type(v, "Text message", text) or _act("click", index=v.by_text("Send"))


def _founder_of(v: _View, org: str) -> str | None:
    for app, els in v.screens():
        if app != "Search" or not any(e.rid == "search:id/page_title" and e.text == org for e in els):
            continue
        for e in els:
            for pat in _FOUNDER:
                m = pat.match(e.text or "")
                if m and m.group("org") == org:
                    return m.group("who")
    return None


def _look_up_founder(v: _View, org: str) -> str:
    step = _open(v, "Search")
    if step:
        return step
    if v.by_rid("search:id/page_title") is not None:
        return _act("navigate_back")
    query = v.find(lambda e: e.editable and e.hint == "Search")
    if query is not None and (v.els[query].text or "") != org:
        return _act("input_text", index=query, text=org)
    if v.title() != "Results":
        return _act("click", index=v.by_text("Search"))
    return _find_or_scroll(v, v.find(lambda e: e.rid == "search:id/result" and e.text == org))


def _price_seen(v: _View, product: str) -> str | None:
    for _, els in v.screens():
        for e in els:
            if e.rid == "shop:id/product" and (e.text or "").startswith(product + ", $"):
                return (e.text or "").rsplit(", ", 1)[1]
    return None


def _shop_find(v: _View, product: str) -> str:
    """Search the shop for `product` and open its page (infeasible when it does not exist)."""
    step = _open(v, "Shop")
    if step:
        return step
    if v.title() == "Product":
        return _act("navigate_back")
    field = v.find(lambda e: e.editable and e.hint == "Search products")
    if field is None:
        return _act("navigate_back")
    if (v.els[field].text or "") != product:
        return _act("input_text", index=field, text=product)
    if v.title() != "Results":
        return _act("click", index=v.by_text("Go"))
    if v.by_text("No results") is not None:
        return _act("status", goal_status="infeasible")
    return _find_or_scroll(v, v.find(lambda e: e.rid == "shop:id/product" and (e.text or "").startswith(product + ", $")))


def _add_cart(v: _View, qty: int, product: str) -> str:
    if v.seen(f"Added {qty} × {product} to the cart."):
        return _act("status", goal_status="complete")
    name = v.by_rid("shop:id/product_name")
    if v.app == "Shop" and name is not None and name.text == product:
        return _type(v, "Quantity", str(qty)) or _act("click", index=v.by_text("Add to cart"))
    return _shop_find(v, product)


def _remove_cart(v: _View, product: str) -> str:
    if v.seen(f"Removed {product} from the cart."):
        return _act("status", goal_status="complete")
    step = _open(v, "Shop")
    if step:
        return step
    if v.title() != "Cart":
        return _act("click", index=v.find(lambda e: e.desc == "Cart"))
    return _find_or_scroll(v, v.find(lambda e: e.desc == f"Remove {product}"))


def _cheapest(v: _View, cat: str) -> str:
    step = _open(v, "Shop")
    if step:
        return step
    if v.title() != cat:
        if v.title() != "Shop":
            return _act("navigate_back")
        return _find_or_scroll(v, v.find(lambda e: e.rid == "shop:id/category" and e.text == cat))
    rows: dict[str, float] = {}
    for app, els in v.screens():
        if app == "Shop" and any(e.rid == "shop:id/title" and e.text == cat for e in els):
            for e in els:
                if e.rid == "shop:id/product" and e.text:
                    name, price = e.text.rsplit(", $", 1)
                    rows[name] = float(price)
    best = min(sorted(rows), key=lambda n: rows[n]) if rows else None
    if v.last_answer() != best and v.can_scroll():
        return _act("scroll", direction="down")
    return _answer_flow(v, best, lambda: _act("navigate_back"))


def _contact_phone_seen(v: _View, name: str) -> str | None:
    for app, els in v.screens():
        if app == "Contacts" and any(e.rid == "contacts:id/name" and e.text == name and not e.clickable for e in els):
            phone = next((e.text for e in els if e.rid == "contacts:id/phone"), None)
            if phone:
                return phone
    return None


def _save_contact(v: _View, name: str, phone: str, new: bool) -> str:
    """Add (new=True) or edit a contact in the Contacts app."""
    if v.seen(f"Saved contact {name}."):
        return _act("status", goal_status="complete")
    step = _open(v, "Contacts")
    if step:
        return step
    if v.by_rid("contacts:id/save") is not None:
        return _type(v, "Name", name) or _type(v, "Phone", phone) or _act("click", index=v.by_text("Save"))
    if v.by_rid("contacts:id/phone") is not None:
        shown = v.by_rid("contacts:id/name")
        if not new and shown is not None and shown.text == name:
            return _act("click", index=v.by_text("Edit"))
        return _act("navigate_back")
    if new:
        return _act("click", index=v.find(lambda e: e.desc == "Add contact"))
    return _find_or_scroll(v, v.find(lambda e: e.rid == "contacts:id/name" and e.text == name))


def _open_contact(v: _View, name: str) -> str:
    step = _open(v, "Contacts")
    if step:
        return step
    if v.by_rid("contacts:id/phone") is not None or v.by_rid("contacts:id/save") is not None:
        return _act("navigate_back")
    return _find_or_scroll(v, v.find(lambda e: e.rid == "contacts:id/name" and e.text == name))


# ---------------------------------------------------------------------- goals
def _answer_flow(v: _View, value: str | None, fetch: Callable[[], str]) -> str:
    """Answer `value` once it is known (again if a different answer came last), then finish."""
    if value is None:
        return fetch()
    if v.last_answer() == value:
        return _act("status", goal_status="complete")
    return _act("answer", text=value)


def _plan(v: _View) -> str:
    g = v.goal
    if m := re.match(r"Turn (on|off) (.+)\.$", g):
        return _toggle(v, m.group(1) == "on", m.group(2))
    if m := re.match(r"What did (.+) last say to you in Messages\?", g):
        name = m.group(1)
        return _answer_flow(v, _read_thread(v, name), lambda: _to_thread(v, name) or _act("wait"))
    if m := re.match(r"Find who founded (.+) in Search\.", g):
        org = m.group(1)
        return _answer_flow(v, _founder_of(v, org), lambda: _look_up_founder(v, org))
    if m := re.match(r"Add a contact named (.+) with phone number (\S+)\.$", g):
        return _save_contact(v, m.group(1), m.group(2), new=True)
    if m := re.match(r"Change the phone number of (.+) to (\S+)\.$", g):
        return _save_contact(v, m.group(1), m.group(2), new=False)
    if m := re.match(r'Send "(.*)" to (.+) in Messages\.$', g):
        return _send(v, m.group(2), m.group(1))
    if m := re.match(r'Add (\d+) of "(.+)" to the shopping cart in Shop\.$', g):
        return _add_cart(v, int(m.group(1)), m.group(2))
    if m := re.match(r'Remove "(.+)" from the shopping cart in Shop\.$', g):
        return _remove_cart(v, m.group(1))
    if m := re.match(r"Which (.+) item in Shop is the cheapest\?", g):
        return _cheapest(v, m.group(1))
    if m := re.match(r'How much does "(.+)" cost in Shop\?', g):
        product = m.group(1)
        return _answer_flow(v, _price_seen(v, product), lambda: _shop_find(v, product))
    return _plan_cross(v, g)


def _plan_cross(v: _View, g: str) -> str:
    if m := re.match(r'Text (.+) the price of "(.+)" from Shop\.$', g):
        price = _price_seen(v, m.group(2))
        return _send(v, m.group(1), price) if price else _shop_find(v, m.group(2))
    if m := re.match(r"Look up who founded (.+) in Search and add that person to Contacts with phone number (\S+)\.$", g):
        who = _founder_of(v, m.group(1))
        return _save_contact(v, who, m.group(2), new=True) if who else _look_up_founder(v, m.group(1))
    if m := re.match(r"Text (.+) the name of the founder of (.+) \(look it up in Search\)\.$", g):
        who = _founder_of(v, m.group(2))
        return _send(v, m.group(1), who) if who else _look_up_founder(v, m.group(2))
    if m := re.match(r"Text (.+) the phone number of (.+) \(it is in Contacts\)\.$", g):
        phone = _contact_phone_seen(v, m.group(2))
        return _send(v, m.group(1), phone) if phone else _open_contact(v, m.group(2))
    if m := re.match(r"(.+) texted you a new phone number in Messages\. Save it in Contacts as a new contact named (.+)\.$", g):
        said = _read_thread(v, m.group(1))
        num = re.search(r"\d[\d-]*\d", said or "")
        if num:
            return _save_contact(v, m.group(2), num.group(0), new=True)
        return _to_thread(v, m.group(1)) or _act("wait")
    return _act("status", goal_status="infeasible")


def device_expert(ctx: History, rng: np.random.Generator) -> str:
    """The scripted expert: one action for the current screen."""
    v = _View(ctx)
    dismiss = v.find(lambda e: e.clickable and e.text in DISMISS)
    if dismiss is not None:
        return "Reason: dismiss the pop-up.\n" + _act("click", index=dismiss)
    return "Reason: next step toward the goal.\n" + _plan(v)


def device_random(ctx: History, rng: np.random.Generator) -> str:
    """A uniformly random well-formed action for the current screen (arguments from the screen)."""
    _, els = parse_screen(ctx.obs_texts[-1]) if ctx.obs_texts else ("", [])
    texts = [e.text for e in els if e.text] or ["ok"]
    pool: list[dict[str, object]] = [{"action_type": "click", "index": i} for i, e in enumerate(els) if e.clickable]
    pool += [{"action_type": "input_text", "index": i, "text": texts[int(rng.integers(len(texts)))]} for i, e in enumerate(els) if e.editable]
    pool += [{"action_type": "scroll", "direction": d} for d in ("up", "down")]
    pool += [{"action_type": k} for k in ("navigate_back", "navigate_home", "wait", "keyboard_enter")]
    pool += [{"action_type": "open_app", "app_name": a} for a in APPS]
    pool += [{"action_type": "answer", "text": texts[int(rng.integers(len(texts)))]}]
    pool += [{"action_type": "status", "goal_status": s} for s in ("complete", "infeasible")]
    return "Action: " + json.dumps(pool[int(rng.integers(len(pool)))], ensure_ascii=False)
