"""The apps' screens: what each (app, screen) shows, built from the device state.

`build_elements(data, layout, cap_rows)` returns the visible elements in reading order, each
with a hidden `action` tuple that `Phone` (phone.py) executes on a click. Layout: status bar
(clock) 0-96, app bar 96-264 (Navigate up, title, app-bar buttons), content rows of 200 px from
264 (8 visible; a Shop banner takes the first), a bottom bar for distractors and composers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from creditgym.envs.device.screen import CONTENT_TOP, ROW_H, SCREEN_W, VISIBLE_ROWS, UIElement, row_bounds
from creditgym.envs.device.state import APPS, SETTING_LABELS, format_price

__all__ = ["ROOT_SCREENS", "Layout", "build_elements", "list_geometry", "search_pages", "search_products"]

ROOT_SCREENS = {"Home": "home", "Settings": "main", "Contacts": "list", "Messages": "threads", "Search": "search", "Shop": "home"}
HOME_DECOYS = ("Camera", "Clock", "Photos")
SETTINGS_EXTRA = {"notifications": "Notifications", "display": "Display", "storage": "Storage", "battery": "Battery", "about": "About phone"}
DISTRACTORS = (
    ("Button", "Help"), ("ImageButton", "Share"), ("TextView", "Tip: long-press for more options"),
    ("Button", "Feedback"), ("ImageButton", "Sync"), ("TextView", "Ad: try Premium free"),
    ("Button", "Settings tips"), ("ImageButton", "More options"), ("TextView", "Last synced today"),
    ("Button", "Invite friends"),
)


@dataclass(frozen=True)
class Layout:
    """Per-episode presentation: order of the Home icons and Settings rows, distractor count."""

    home_order: tuple[str, ...] = (*APPS, *HOME_DECOYS)
    settings_order: tuple[str, ...] = (*SETTING_LABELS, *SETTINGS_EXTRA)
    distractors: int = 0


def _clock() -> UIElement:
    return UIElement("TextView", (0, 0, SCREEN_W, 96), text="09:41", rid="android:id/clock")


def _app_bar(app: str, title: str, up: bool, buttons: Sequence[tuple[str, tuple[Any, ...]]] = ()) -> list[UIElement]:
    a = app.lower()
    out = []
    if up:
        out.append(UIElement("ImageButton", (0, 96, 168, 264), desc="Navigate up", clickable=True, action=("back",)))
    x_end = SCREEN_W - 168 * len(buttons)
    out.append(UIElement("TextView", (168, 96, x_end, 264), text=title, rid=f"{a}:id/title"))
    for j, (desc, action) in enumerate(buttons):
        x1 = x_end + 168 * j
        out.append(UIElement("ImageButton", (x1, 96, x1 + 168, 264), desc=desc, rid=f"{a}:id/{desc.lower().replace(' ', '_')}", clickable=True, action=action))
    return out


def _edit(app: str, field: str, hint: str, value: str, bounds: tuple[int, int, int, int], focus: str) -> UIElement:
    return UIElement(
        "EditText", bounds, text=value or None, hint=hint, rid=f"{app.lower()}:id/{field}",
        editable=True, clickable=True, focused=focus == field, action=("focus", field),
    )


def search_pages(pages: Mapping[str, Sequence[str]], query: str) -> list[str]:
    """Titles matching a query: score 2 per query token in the title, 1 per token in the text;
    stable order (-score, title)."""
    q = {t for t in _tokens(query)}
    scored = []
    for title in sorted(pages):
        tt, body = set(_tokens(title)), set(_tokens(" ".join(pages[title])))
        score = sum(2 * (t in tt) + (t in body) for t in q)
        if score > 0:
            scored.append((-score, title))
    return [t for _, t in sorted(scored)]


def search_products(products: Mapping[str, Any], query: str) -> list[str]:
    """Products whose name holds every query token (case-insensitive), sorted by name."""
    q = _tokens(query)
    if not q:
        return []
    return [n for n in sorted(products) if all(t in _tokens(n) for t in q)]


def _tokens(s: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() else " " for c in s).split()


def _rows(data: Mapping[str, Any], layout: Layout) -> list[list[tuple[str, dict[str, Any]]]]:
    """The scrollable rows of the current screen: each row a list of (class, attributes)."""
    nav = data["nav"]
    app, screen, arg = nav["app"], nav["screen"], nav["arg"]
    s = data["settings"]
    if app == "Settings" and screen == "main":
        rows = []
        for key in layout.settings_order:
            if key in SETTING_LABELS:
                rows.append([("Switch", dict(text=SETTING_LABELS[key], rid=f"settings:id/{key}", checkable=True, checked=bool(s[key]), clickable=True, action=("toggle", key)))])
            else:
                act = ("goto", "notifications", "") if key == "notifications" else ("noop",)
                rows.append([("TextView", dict(text=SETTINGS_EXTRA[key], rid=f"settings:id/{key}", clickable=True, action=act))])
        return rows
    if app == "Settings" and screen == "notifications":
        return [[("Switch", dict(text=a, checkable=True, checked=bool(s["permissions"][a]), clickable=True, action=("perm", a)))] for a in APPS]
    if app == "Contacts" and screen == "list":
        return [[("TextView", dict(text=n, rid="contacts:id/name", clickable=True, action=("goto", "detail", n)))] for n in sorted(data["contacts"])]
    if app == "Contacts" and screen == "detail":
        if arg not in data["contacts"]:
            return [[("TextView", dict(text="Contact not found"))]]
        return [
            [("TextView", dict(text=arg, rid="contacts:id/name"))],
            [("TextView", dict(text=data["contacts"][arg], desc="Phone", rid="contacts:id/phone"))],
            [("Button", dict(text="Edit", clickable=True, action=("goto", "edit", arg)))],
            [("Button", dict(text="Delete", clickable=True, action=("delete_contact", arg)))],
        ]
    if app == "Contacts" and screen == "edit":
        return [[("EditText", dict(field="name", hint="Name"))], [("EditText", dict(field="phone", hint="Phone"))]]
    if app == "Messages" and screen == "threads":
        return [[("TextView", dict(text=n, rid="messages:id/conversation", clickable=True, action=("goto", "thread", n)))] for n in sorted(data["contacts"])]
    if app == "Messages" and screen == "thread":
        return [[("TextView", dict(text=t, desc="Received" if who == "in" else "Sent", rid="messages:id/message"))] for who, t in data["threads"].get(arg, [])]
    if app == "Search" and screen == "results":
        hits = search_pages(data["pages"], arg)
        if not hits:
            return [[("TextView", dict(text="No results"))]]
        return [[("TextView", dict(text=t, rid="search:id/result", clickable=True, action=("goto", "page", t)))] for t in hits]
    if app == "Search" and screen == "page":
        return [[("TextView", dict(text=arg, rid="search:id/page_title"))]] + [[("TextView", dict(text=x))] for x in data["pages"].get(arg, [])]
    products = data["shop"]["products"]
    if app == "Shop" and screen == "home":
        cats = sorted({p["category"] for p in products.values()})
        return [[("TextView", dict(text=c, rid="shop:id/category", clickable=True, action=("goto", "category", c)))] for c in cats]
    if app == "Shop" and screen in ("category", "results"):
        names = [n for n in sorted(products) if products[n]["category"] == arg] if screen == "category" else search_products(products, arg)
        if not names:
            return [[("TextView", dict(text="No results"))]]
        return [[("TextView", dict(text=f"{n}, {format_price(products[n]['price'])}", rid="shop:id/product", clickable=True, action=("goto", "product", n)))] for n in names]
    if app == "Shop" and screen == "product":
        p = products[arg]
        return [
            [("TextView", dict(text=arg, rid="shop:id/product_name"))],
            [("TextView", dict(text=format_price(p["price"]), desc="Price", rid="shop:id/price"))],
            [("TextView", dict(text=f"Category: {p['category']}"))],
            [("EditText", dict(field="qty", hint="Quantity"))],
            [("Button", dict(text="Add to cart", clickable=True, action=("add_cart", arg)))],
            [("Button", dict(text="Buy now", clickable=True, action=("buy_now", arg)))],
        ]
    if app == "Shop" and screen == "cart":
        cart = data["shop"]["cart"]
        if not cart:
            return [[("TextView", dict(text="Your cart is empty"))]]
        rows = []
        for n in sorted(cart):
            total = format_price(products[n]["price"] * cart[n])
            rows.append([
                ("TextView", dict(text=f"{n} × {cart[n]}, {total}", rid="shop:id/cart_item", x2=888)),
                ("ImageButton", dict(desc=f"Remove {n}", clickable=True, action=("remove_cart", n), x1=888)),
            ])
        rows.append([("Button", dict(text="Checkout", clickable=True, action=("checkout",)))])
        return rows
    return []


def list_geometry(data: Mapping[str, Any], layout: Layout) -> tuple[int, int]:
    """`(rows, visible rows)` of the current screen's list (rows = 0 on screens without one)."""
    cap = VISIBLE_ROWS - (data["popup"] == "banner") - bool(_fixed_top(data))
    return len(_rows(data, layout)), cap


def _fixed_top(data: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Rows pinned above the list (search boxes)."""
    nav = data["nav"]
    if nav["app"] == "Search" and nav["screen"] in ("search", "results"):
        return [("EditText", dict(field="query", hint="Search")), ("Button", dict(text="Search", clickable=True, action=("submit", "query"), x1=880))]
    if nav["app"] == "Shop" and nav["screen"] in ("home", "results"):
        return [("EditText", dict(field="shop_query", hint="Search products")), ("Button", dict(text="Go", clickable=True, action=("submit", "shop_query"), x1=880))]
    return []


def _header(data: Mapping[str, Any]) -> list[UIElement]:
    nav = data["nav"]
    app, screen, arg = nav["app"], nav["screen"], nav["arg"]
    if app == "Home":
        return []
    root = ROOT_SCREENS[app] == screen
    buttons: list[tuple[str, tuple[Any, ...]]] = []
    if app == "Contacts" and screen == "list":
        buttons = [("Add contact", ("goto", "edit", ""))]
    if app == "Shop" and screen != "cart":
        buttons = [("Cart", ("goto", "cart", ""))]
    title = {"detail": "Contact", "edit": "Edit contact" if arg else "New contact", "thread": arg, "results": "Results",
             "page": "Article", "category": arg, "product": "Product", "cart": "Cart", "notifications": "Notifications"}.get(screen, app)
    return _app_bar(app, title, up=not root, buttons=buttons)


def _home(layout: Layout) -> list[UIElement]:
    out = []
    for j, name in enumerate(layout.home_order):
        col, row = j % 4, j // 4
        x1, y1 = col * 270, 400 + row * 320
        act = ("open_app", name) if name in APPS else ("noop",)
        out.append(UIElement("TextView", (x1, y1, x1 + 270, y1 + 320), text=name, desc=name, rid=f"launcher:id/{name.lower()}", clickable=True, action=act))
    return out


def _popup(kind: str, app: str) -> list[UIElement]:
    if kind == "rate":
        title, no, yes, yes_act = "Rate this app?", "Not now", "Rate now", ("popup_dismiss",)
    else:
        title, no, yes, yes_act = f"Allow {app} to send you notifications?", "Don't allow", "Allow", ("popup_allow",)
    return [
        UIElement("TextView", (140, 900, 940, 1100), text=title, rid="android:id/alertTitle"),
        UIElement("Button", (140, 1100, 540, 1250), text=no, rid="android:id/button2", clickable=True, action=("popup_dismiss",)),
        UIElement("Button", (540, 1100, 940, 1250), text=yes, rid="android:id/button1", clickable=True, action=yes_act),
    ]


def _element(cls: str, attrs: dict[str, Any], bounds: tuple[int, int, int, int], data: Mapping[str, Any]) -> UIElement:
    a = dict(attrs)
    a.pop("x1", None), a.pop("x2", None)
    field = a.pop("field", None)
    if field is not None:
        nav = data["nav"]
        return _edit(nav["app"], field, a["hint"], nav["fields"].get(field, ""), bounds, nav["focus"])
    return UIElement(cls, bounds, **a)


def build_elements(data: Mapping[str, Any], layout: Layout) -> list[UIElement]:
    """Every visible element of the current screen, in reading order."""
    nav = data["nav"]
    out = [_clock()]
    popup = data["popup"]
    if popup in ("rate", "notify"):
        return out + _popup(popup, nav["app"])
    if nav["app"] == "Home":
        return out + _home(layout)
    out += _header(data)
    top = CONTENT_TOP
    if popup == "banner":
        out.append(UIElement("TextView", (0, top, 880, top + ROW_H), text="Summer sale: 20% off everything!", rid="shop:id/banner"))
        out.append(UIElement("Button", (880, top, SCREEN_W, top + ROW_H), text="Close", rid="shop:id/banner_close", clickable=True, action=("banner_close",)))
        top += ROW_H
    fixed = _fixed_top(data)
    if fixed:
        for cls, attrs in fixed:
            out.append(_element(cls, attrs, (attrs.get("x1", 48), top, attrs.get("x2", 880 if cls == "EditText" else SCREEN_W), top + ROW_H), data))
        top += ROW_H
    cap = VISIBLE_ROWS - (top - CONTENT_TOP) // ROW_H
    rows = _rows(data, layout)
    scroll = nav["scroll"]
    if len(rows) > cap:  # a list container is shown only when it scrolls (AndroidWorld's node filter)
        out.append(UIElement("RecyclerView", (0, top, SCREEN_W, top + cap * ROW_H), rid=f"{nav['app'].lower()}:id/list", scrollable=True))
    for slot, row in enumerate(rows[scroll : scroll + cap]):
        for cls, attrs in row:
            b = row_bounds(slot, attrs.get("x1", 0), attrs.get("x2", SCREEN_W), top)
            out.append(_element(cls, attrs, b, data))
    if nav["app"] == "Messages" and nav["screen"] == "thread":
        out.append(_edit("Messages", "compose", "Text message", nav["fields"].get("compose", ""), (48, 2180, 880, 2330), nav["focus"]))
        out.append(UIElement("Button", (900, 2180, 1032, 2330), text="Send", rid="messages:id/send", clickable=True, action=("send",)))
    if nav["screen"] == "edit":
        out.append(UIElement("Button", (48, 2180, 520, 2330), text="Cancel", clickable=True, action=("back",)))
        out.append(UIElement("Button", (560, 2180, 1032, 2330), text="Save", rid="contacts:id/save", clickable=True, action=("save_contact",)))
    out += _distractors(layout.distractors)
    return out


def _distractors(n: int) -> list[UIElement]:
    out = []
    per_row = 5
    w = SCREEN_W // per_row
    for j in range(min(n, len(DISTRACTORS))):
        cls, label = DISTRACTORS[j]
        x1, y1 = (j % per_row) * w, 1880 + (j // per_row) * 140
        kw: dict[str, Any] = {"desc": label} if cls == "ImageButton" else {"text": label}
        out.append(UIElement(cls, (x1, y1, x1 + w, y1 + 140), clickable=cls != "TextView", action=("noop",), **kw))
    return out

