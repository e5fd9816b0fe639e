"""Device tasks: templates, the task generator and the success checks (ENVS.md section 4, "Tasks").

A task key `d{difficulty}.{template}.{f|x}.n{contacts}.{seed:08x}` (x = infeasible variant)
rebuilds the whole phone and goal, so `task_id = "device/{split}/{key}"` needs no RNG.
Difficulty 1: one app, a few steps; 2: forms, scrolling, shop; 3: cross-app. Heldout reserves
the cross-app cells shop->messages and search->contacts. Success is checked on the final state:
the goal predicate holds and the diff from the initial state touches only the allowed paths
(else `collateral = 1`); answer tasks also need the last answer to match gold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from creditgym.envs.base import Task, split_of_key
from creditgym.envs.device.state import (
    CATEGORIES,
    MISSING_SETTINGS,
    PRODUCT_ADJ,
    PRODUCT_NOUNS,
    SETTING_LABELS,
    build_world,
    diff_paths,
    format_price,
    phone_number,
)
from creditgym.envs.parsing import normalize_answer

__all__ = [
    "HELDOUT_CELLS",
    "TEMPLATES",
    "answer_matches",
    "generate_task",
    "goal_holds",
    "judge",
    "subgoals",
    "task_from_id",
    "world_of",
]

# template -> (difficulty, has an infeasible variant, answer task, app where the goal is met)
TEMPLATES: dict[str, tuple[int, bool, bool, str]] = {
    "toggle": (1, True, False, "Settings"),
    "last_said_top": (1, False, True, "Messages"),
    "founder": (1, False, True, "Search"),
    "add_contact": (2, False, False, "Contacts"),
    "edit_contact": (2, True, False, "Contacts"),
    "send": (2, True, False, "Messages"),
    "last_said": (2, False, True, "Messages"),
    "add_cart": (2, True, False, "Shop"),
    "remove_cart": (2, False, False, "Shop"),
    "cheapest": (2, False, True, "Shop"),
    "price": (2, False, True, "Shop"),
    "shop_to_messages": (3, True, False, "Messages"),
    "search_to_contacts": (3, False, False, "Contacts"),
    "search_to_messages": (3, False, False, "Messages"),
    "contacts_to_messages": (3, False, False, "Messages"),
    "messages_to_contacts": (3, False, False, "Contacts"),
}
HELDOUT_CELLS = ("shop_to_messages", "search_to_contacts")
SEND_TEXTS = ("running late", "call me tonight", "see you soon", "happy new year", "meeting at 3", "dinner is ready", "on the train now")
_NEW_FIRST = ("Nadia", "Oskar", "Petra", "Rufus", "Selma", "Timo", "Ursula", "Vera")
_NEW_LAST = ("Albers", "Bakker", "Castro", "Dumas", "Engel", "Falk", "Gomez", "Hart")


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _last(thread: Sequence[Sequence[str]], who: str) -> str | None:
    for w, t in reversed(thread):
        if w == who:
            return t
    return None


def _fresh_name(rng: np.random.Generator, taken: Mapping[str, Any]) -> str:
    for _ in range(1000):
        name = f"{_pick(rng, _NEW_FIRST)} {_pick(rng, _NEW_LAST)}"
        if name not in taken:
            return name
    raise RuntimeError("no fresh contact name in 1000 tries")


def _fresh_product(rng: np.random.Generator, products: Mapping[str, Any]) -> str:
    for _ in range(1000):
        cat = _pick(rng, CATEGORIES)
        name = f"{_pick(rng, PRODUCT_ADJ)} {_pick(rng, PRODUCT_NOUNS[cat])}"
        if name not in products:
            return name
    raise RuntimeError("no missing product name in 1000 tries")


def _ensure_last_incoming(w: dict[str, Any], name: str, rng: np.random.Generator) -> str:
    thread = w["threads"].setdefault(name, [])
    if not thread or thread[-1][0] != "in":
        thread.append(["in", _pick(rng, ("are you free later", "i will be there at six", "the door code is blue", "lunch tomorrow?"))])
    return thread[-1][1]


def _unique_cheapest(w: dict[str, Any], cat: str) -> str:
    items = sorted((p["price"], n) for n, p in w["shop"]["products"].items() if p["category"] == cat)
    if len(items) > 1 and items[0][0] == items[1][0]:
        w["shop"]["products"][items[0][1]]["price"] = max(1, items[0][0] - 50)
    return items[0][1]


def _build(template: str, w: dict[str, Any], rng: np.random.Generator, infeasible: bool) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """Goal text, gold answers and the check spec (`allowed` paths + predicate arguments)."""
    contacts, products = w["contacts"], w["shop"]["products"]
    names = sorted(contacts)
    if template == "toggle":
        if infeasible:
            return f"Turn on {_pick(rng, MISSING_SETTINGS)}.", (), {"allowed": []}
        key = _pick(rng, sorted(SETTING_LABELS))
        target = bool(rng.integers(2))
        w["settings"][key] = not target
        return f"Turn {'on' if target else 'off'} {SETTING_LABELS[key]}.", (), {"allowed": [f"settings.{key}"], "key": key, "target": target}
    if template in ("last_said_top", "last_said"):
        name = _pick(rng, names[:8] if template == "last_said_top" else names)
        gold = _ensure_last_incoming(w, name, rng)
        return f"What did {name} last say to you in Messages? Answer with the message text.", (gold,), {"allowed": []}
    if template == "founder":
        org = _pick(rng, sorted(w["pages"]))
        return f"Find who founded {org} in Search. Answer with the name.", (_founder(w, org),), {"allowed": []}
    if template == "add_contact":
        name, phone = _fresh_name(rng, contacts), phone_number(rng)
        return f"Add a contact named {name} with phone number {phone}.", (), {"allowed": [f"contacts.{name}"], "name": name, "phone": phone}
    if template == "edit_contact":
        name, phone = (_fresh_name(rng, contacts) if infeasible else _pick(rng, names)), phone_number(rng)
        return f"Change the phone number of {name} to {phone}.", (), {"allowed": [f"contacts.{name}"], "name": name, "phone": phone}
    if template == "send":
        name = _fresh_name(rng, contacts) if infeasible else _pick(rng, names)
        text = _pick(rng, SEND_TEXTS)
        return f'Send "{text}" to {name} in Messages.', (), {"allowed": [f"threads.{name}"], "name": name, "text": text}
    if template == "add_cart":
        cands = sorted(n for n in products if n not in w["shop"]["cart"])
        product = _fresh_product(rng, products) if infeasible else _pick(rng, cands)
        qty = int(rng.integers(2, 6))
        return f'Add {qty} of "{product}" to the shopping cart in Shop.', (), {"allowed": [f"shop.cart.{product}"], "product": product, "qty": qty}
    if template == "remove_cart":
        product = _pick(rng, sorted(products))
        w["shop"]["cart"].setdefault(product, int(rng.integers(1, 4)))
        return f'Remove "{product}" from the shopping cart in Shop.', (), {"allowed": [f"shop.cart.{product}"], "product": product}
    if template == "cheapest":
        cats = sorted({p["category"] for p in products.values()})
        cat = _pick(rng, cats)
        return f"Which {cat} item in Shop is the cheapest? Answer with its name.", (_unique_cheapest(w, cat),), {"allowed": []}
    if template == "price":
        product = _pick(rng, sorted(products))
        return f'How much does "{product}" cost in Shop? Answer with the price.', (format_price(products[product]["price"]),), {"allowed": [], "numeric": True}
    return _build_cross(template, w, rng, infeasible)


def _founder(w: Mapping[str, Any], org: str) -> str:
    fact = w["pages"][org][0]
    m = re.match(rf"{re.escape(org)} was founded by (.+) in \d+\.$", fact) or re.match(rf"(.+) founded {re.escape(org)} in \d+\.$", fact) \
        or re.match(rf"The founder of {re.escape(org)} is (.+)\.$", fact)
    assert m is not None, fact
    return m.group(1)


def _build_cross(template: str, w: dict[str, Any], rng: np.random.Generator, infeasible: bool) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    contacts, products = w["contacts"], w["shop"]["products"]
    names = sorted(contacts)
    if template == "shop_to_messages":
        name = _pick(rng, names)
        product = _fresh_product(rng, products) if infeasible else _pick(rng, sorted(products))
        price = products[product]["price"] if product in products else 0
        return f'Text {name} the price of "{product}" from Shop.', (), {"allowed": [f"threads.{name}"], "name": name, "price": price}
    if template == "search_to_contacts":
        org, phone = _pick(rng, sorted(w["pages"])), phone_number(rng)
        founder = _founder(w, org)
        return (f"Look up who founded {org} in Search and add that person to Contacts with phone number {phone}.", (),
                {"allowed": [f"contacts.{founder}"], "name": founder, "phone": phone})
    if template == "search_to_messages":
        name, org = _pick(rng, names), _pick(rng, sorted(w["pages"]))
        return f"Text {name} the name of the founder of {org} (look it up in Search).", (), {"allowed": [f"threads.{name}"], "name": name, "text": _founder(w, org)}
    if template == "contacts_to_messages":
        a, b = (str(x) for x in rng.choice(names, size=2, replace=False))
        return f"Text {a} the phone number of {b} (it is in Contacts).", (), {"allowed": [f"threads.{a}"], "name": a, "digits": _digits(contacts[b])}
    if template == "messages_to_contacts":
        a, new, phone = _pick(rng, names), _fresh_name(rng, contacts), phone_number(rng)
        w["threads"].setdefault(a, []).append(["in", f"my new number is {phone}"])
        return (f"{a} texted you a new phone number in Messages. Save it in Contacts as a new contact named {new}.", (),
                {"allowed": [f"contacts.{new}"], "name": new, "phone": phone})
    raise ValueError(f"unknown device task template {template!r}; known: {sorted(TEMPLATES)}")


def world_of(key: str) -> tuple[dict[str, Any], str, tuple[str, ...], dict[str, Any]]:
    """Rebuild `(initial world, goal, gold, spec)` from a task key."""
    m = re.fullmatch(r"d(\d)\.([a-z_]+)\.([fx])\.n(\d+)\.([0-9a-f]{8})", key)
    if m is None or m.group(2) not in TEMPLATES:
        raise ValueError(f"bad device task key {key!r}: expected d<difficulty>.<template>.<f|x>.n<contacts>.<8 hex digits>")
    template, infeasible, n, seed = m.group(2), m.group(3) == "x", int(m.group(4)), int(m.group(5), 16)
    rng = np.random.default_rng(seed)
    world = build_world(rng, n_contacts=n, n_products=int(rng.integers(20, 61)))
    goal, gold, spec = _build(template, world, rng, infeasible)
    spec.update(template=template, infeasible=infeasible)
    return world, goal, gold, spec


def task_from_id(task_id: str) -> Task:
    """Rebuild a Task from `device/{split}/{key}`."""
    parts = task_id.split("/")
    if len(parts) != 3 or parts[0] != "device":
        raise ValueError(f"bad device task id {task_id!r}: expected 'device/<split>/<key>'")
    split, key = parts[1], parts[2]
    world, goal, gold, spec = world_of(key)
    return Task(task_id, split, prompt=goal, gold=gold, difficulty=int(key[1]), private={"key": key, "spec": spec, "world": world})


def generate_task(rng: np.random.Generator, split: str, difficulty: int | Sequence[int] = 1,
                  list_length: tuple[int, int] = (8, 30), p_infeasible: float = 0.1) -> Task:
    """Draw a task of the split (rejection sampling on the key's hash, <= 1000 tries)."""
    levels = [difficulty] if isinstance(difficulty, int) else list(difficulty)
    if not levels or any(d not in (1, 2, 3) for d in levels):
        raise ValueError(f"difficulty must be 1, 2 or 3 (or a list of them), got {difficulty!r}")
    lo, hi = int(list_length[0]), int(list_length[1])
    if not 3 <= lo <= hi:
        raise ValueError(f"list_length must be (lo, hi) with 3 <= lo <= hi, got {list_length!r}")
    for _ in range(1000):
        d = int(_pick(rng, levels))
        names = [t for t, v in TEMPLATES.items() if v[0] == d and (split == "heldout" or t not in HELDOUT_CELLS)]
        template = _pick(rng, names)
        infeasible = TEMPLATES[template][1] and rng.random() < p_infeasible
        n = int(rng.integers(lo, hi + 1))
        key = f"d{d}.{template}.{'x' if infeasible else 'f'}.n{n}.{int(rng.integers(2**32)):08x}"
        if split_of_key(key) == split:
            return task_from_id(f"device/{split}/{key}")
    raise RuntimeError(f"no device task landed in split {split!r} after 1000 tries")


def _price_cents(text: str) -> int | None:
    m = re.search(r"\d+(?:\.\d{1,2})?", text.replace(",", ""))
    if m is None:
        return None
    whole, _, frac = m.group(0).partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def answer_matches(answer: str | None, gold: Sequence[str], numeric: bool = False) -> bool:
    """EM after SQuAD normalization; prices compare numerically (`$12.99` == `12.99`)."""
    if answer is None:
        return False
    if numeric:
        got = _price_cents(answer)
        return got is not None and any(got == _price_cents(g) for g in gold)
    return normalize_answer(answer) in {normalize_answer(g) for g in gold}


def goal_holds(spec: Mapping[str, Any], gold: Sequence[str], final: Mapping[str, Any]) -> bool:
    """The template's goal predicate on the final state (answer tasks: the last answer matches)."""
    t = spec["template"]
    if gold:
        answers = final["answers"]
        return answer_matches(answers[-1] if answers else None, gold, bool(spec.get("numeric")))
    if t == "toggle":
        return "key" in spec and final["settings"][spec["key"]] == spec["target"]
    if t in ("add_contact", "edit_contact", "search_to_contacts", "messages_to_contacts"):
        phone = final["contacts"].get(spec["name"])
        return phone is not None and _digits(phone) == _digits(spec["phone"])
    if t in ("add_cart", "remove_cart"):
        return final["shop"]["cart"].get(spec["product"], 0) == spec.get("qty", 0)
    last = _last(final["threads"].get(spec["name"], []), "out")
    if last is None:
        return False
    if t == "send":
        return last.strip() == spec["text"]
    if t == "search_to_messages":
        return normalize_answer(last) == normalize_answer(spec["text"])
    if t == "contacts_to_messages":
        return _digits(last) == spec["digits"]
    if t == "shop_to_messages":
        return _price_cents(last) == spec["price"]
    raise ValueError(f"no goal predicate for template {t!r}")


def judge(task: Task, final: Mapping[str, Any], status: str | None) -> dict[str, float]:
    """`success`, `collateral` and `answered` of an episode ending with `status` (None = no status)."""
    spec, initial = task.private["spec"], task.private["world"]
    extra = [p for p in diff_paths(initial, final) if p not in spec["allowed"]]
    collateral = float(bool(extra))
    if spec["infeasible"]:
        ok = status == "infeasible"
    else:
        ok = status == "complete" and goal_holds(spec, task.gold, final)
    return {"success": float(ok and not collateral), "collateral": collateral, "answered": float(bool(final["answers"]))}


def subgoals(task: Task, state: Mapping[str, Any]) -> list[bool]:
    """Sub-conditions for potential-based shaping: the goal's app is open, the goal holds."""
    spec = task.private["spec"]
    app = TEMPLATES[spec["template"]][3]
    done = (not spec["infeasible"]) and goal_holds(spec, task.gold, state)
    return [state["nav"]["app"] == app, done]

