"""The simulated phone's state: a frozen, JSON-serializable `DeviceState` and the world generator.

The working state is a plain dict of JSON types (the apps edit it during a step);
`DeviceState` freezes it as canonical JSON, which `state_key` hashes and snapshots store:

    settings  {airplane, wifi, bluetooth, dark_theme, dnd: bool, permissions: {app: bool}}
    contacts  {name: phone}
    threads   {name: [["in" | "out", text], ...]}   (oldest first)
    shop      {products: {name: {category, price}}, cart: {name: qty}, orders: [[...]]}
    pages     {title: [sentence, ...]}               (the Search app's world)
    nav       {app, screen, arg, scroll, fields: {field: text}, focus}
    popup     "" | "rate" | "notify" | "banner"
    answers   [text, ...]

Prices are integer cents. Everything is drawn from a generator seeded by the task key, so a task
id rebuilds the same phone.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "APPS",
    "CATEGORIES",
    "SETTING_LABELS",
    "DeviceState",
    "build_world",
    "diff_paths",
    "format_price",
    "initial_nav",
]

APPS = ("Settings", "Contacts", "Messages", "Search", "Shop")
SETTING_LABELS = {
    "airplane": "Airplane mode",
    "wifi": "Wi-Fi",
    "bluetooth": "Bluetooth",
    "dark_theme": "Dark theme",
    "dnd": "Do not disturb",
}
MISSING_SETTINGS = ("NFC", "Mobile hotspot", "Battery saver", "Location")

_FIRST = (
    "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Karl Lena Mona Nils Olga Pavel Quinn Rosa "
    "Sami Tara Uma Viktor Wendy Xavi Yara Zoe Aaron Bianca Cyrus Dalia Emil Fiona Gus Hana Igor Jana"
).split()
_LAST = (
    "Moreno Novak Okafor Patel Quist Rossi Silva Tanaka Ueda Vance Weber Young Zhou Abbott Brandt "
    "Costa Diaz Eklund Fischer Garcia Holm Ivanova Jensen Kowal Lindqvist Meyer Nakamura Olsen"
).split()
CATEGORIES = ("Kitchen", "Outdoor", "Books", "Toys", "Garden", "Office")
PRODUCT_NOUNS = {
    "Kitchen": "Mug Kettle Spatula Teapot Skillet Whisk Colander Grater Ladle Tumbler".split(),
    "Outdoor": "Tent Lantern Backpack Hammock Compass Canteen Tarp Poncho Stove Cooler".split(),
    "Books": "Atlas Almanac Novel Cookbook Journal Sketchbook Diary Primer Guide Anthology".split(),
    "Toys": "Kite Puzzle Robot Yo-yo Blocks Marbles Drone Puppet Train Top".split(),
    "Garden": "Trowel Planter Hose Rake Shears Sprinkler Gloves Seeds Trellis Wheelbarrow".split(),
    "Office": "Stapler Notebook Lamp Binder Planner Marker Folder Calculator Desk Pad".split(),
}
PRODUCT_ADJ = "Trail Classic Mini Deluxe Urban Cozy Solar Copper Bamboo Nordic Retro Pocket".split()
_SYL = "ka lo ve mi ra to sen dar vel mor ni qua zen bri sol tha ru fen ox lim".split()
_ORG_SUFFIX = ("Systems", "Labs", "Foods", "Motors", "Records", "Press", "Works", "Energy")
_INCOMING = (
    "see you at noon", "the meeting moved to friday", "can you call me back", "thanks for dinner",
    "running a bit late", "did you get the tickets", "happy birthday", "the package arrived",
    "lets go hiking on sunday", "i left my keys at your place", "the train is delayed",
    "good luck tomorrow", "bring an umbrella", "dinner is at eight", "i found your charger",
)
_OUTGOING = ("ok", "sounds good", "on my way", "thank you", "talk later", "sure thing", "got it")


def format_price(cents: int) -> str:
    """`1299 -> "$12.99"` (fixed formatting: no float rounding surprises)."""
    return f"${cents // 100}.{cents % 100:02d}"


@dataclass(frozen=True)
class DeviceState:
    """A frozen device state: its canonical JSON (sorted keys, no whitespace)."""

    canonical: str

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> DeviceState:
        return DeviceState(json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.canonical)

    def digest(self, n: int = 12) -> str:
        return hashlib.sha1(self.canonical.encode()).hexdigest()[:n]


def initial_nav() -> dict[str, Any]:
    return {"app": "Home", "screen": "home", "arg": "", "scroll": 0, "fields": {}, "focus": "", "stack": []}


def _person(rng: np.random.Generator, taken: set[str]) -> str:
    for _ in range(1000):
        name = f"{_FIRST[int(rng.integers(len(_FIRST)))]} {_LAST[int(rng.integers(len(_LAST)))]}"
        if name not in taken:
            taken.add(name)
            return name
    raise RuntimeError("could not draw a fresh person name in 1000 tries")


def _syllable_name(rng: np.random.Generator, n: int) -> str:
    return "".join(_SYL[int(rng.integers(len(_SYL)))] for _ in range(n)).capitalize()


def phone_number(rng: np.random.Generator) -> str:
    return f"555-{int(rng.integers(100, 10000)):04d}"


def _pages(rng: np.random.Generator, n_orgs: int) -> dict[str, list[str]]:
    """Fictional organizations with founders and years; look-alikes share a suffix."""
    pages: dict[str, list[str]] = {}
    founders: set[str] = set()
    while len(pages) < n_orgs:
        title = f"{_syllable_name(rng, 2 + int(rng.integers(2)))} {_ORG_SUFFIX[int(rng.integers(len(_ORG_SUFFIX)))]}"
        if title in pages:
            continue
        founder = f"{_syllable_name(rng, 2)} {_syllable_name(rng, 3)}"
        if founder in founders:
            continue
        founders.add(founder)
        year = int(rng.integers(1890, 2015))
        city = _syllable_name(rng, 3)
        style = int(rng.integers(3))
        fact = (
            f"{title} was founded by {founder} in {year}.",
            f"{founder} founded {title} in {year}.",
            f"The founder of {title} is {founder}.",
        )[style]
        pages[title] = [fact, f"It is headquartered in {city}.", f"{title} employs about {int(rng.integers(20, 900))} people."]
    return pages


def build_world(rng: np.random.Generator, n_contacts: int, n_products: int, n_orgs: int = 24) -> dict[str, Any]:
    """A fresh phone: settings, `n_contacts` contacts with message threads, a shop of `n_products`
    products, the Search app's pages, Home screen. Pure in `rng`."""
    settings: dict[str, Any] = {k: bool(rng.integers(2)) for k in sorted(SETTING_LABELS)}
    settings["permissions"] = {a: False for a in APPS}
    taken: set[str] = set()
    contacts = {}
    for _ in range(n_contacts):
        contacts[_person(rng, taken)] = phone_number(rng)
    threads: dict[str, list[list[str]]] = {}
    for name in sorted(contacts):
        msgs: list[list[str]] = []
        for _ in range(int(rng.integers(1, 5))):
            if rng.random() < 0.6:
                msgs.append(["in", _INCOMING[int(rng.integers(len(_INCOMING)))]])
            else:
                msgs.append(["out", _OUTGOING[int(rng.integers(len(_OUTGOING)))]])
        threads[name] = msgs
    products: dict[str, dict[str, Any]] = {}
    while len(products) < n_products:
        cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        nouns = PRODUCT_NOUNS[cat]
        name = f"{PRODUCT_ADJ[int(rng.integers(len(PRODUCT_ADJ)))]} {nouns[int(rng.integers(len(nouns)))]}"
        if name in products:
            continue
        products[name] = {"category": cat, "price": int(rng.integers(3, 200)) * 100 + int(rng.choice([0, 49, 99]))}
    cart = {}
    for name in sorted(products):
        if rng.random() < 0.08:
            cart[name] = int(rng.integers(1, 4))
    return {
        "settings": settings,
        "contacts": contacts,
        "threads": threads,
        "shop": {"products": products, "cart": cart, "orders": []},
        "pages": _pages(rng, n_orgs),
        "nav": initial_nav(),
        "popup": "",
        "answers": [],
    }


def _flat(d: Mapping[str, Any]) -> dict[str, Any]:
    """Paths the success checkers compare (navigation, pop-ups, answers and static data excluded)."""
    out: dict[str, Any] = {}
    for k, v in d["settings"].items():
        if k == "permissions":
            for app, p in v.items():
                out[f"settings.permissions.{app}"] = p
        else:
            out[f"settings.{k}"] = v
    for name, phone in d["contacts"].items():
        out[f"contacts.{name}"] = phone
    for name, msgs in d["threads"].items():
        out[f"threads.{name}"] = msgs
    for name, qty in d["shop"]["cart"].items():
        out[f"shop.cart.{name}"] = qty
    out["shop.orders"] = d["shop"]["orders"]
    return out


def diff_paths(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Sorted paths whose value differs between two device states (added or removed paths too)."""
    a, b = _flat(before), _flat(after)
    return sorted(k for k in set(a) | set(b) if a.get(k, None) != b.get(k, None))


def clone(d: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(dict(d))
