"""Procedurally generated tool tasks: arith, table, lookup, text (ENVS.md section 3).

The canonical key `"{type}-d{difficulty}-{kind}-{subseed}"` fixes a task: its content is drawn from
`numpy.random.default_rng(subseed)`, so `task_id = "tools/<split>/<key>"` rebuilds it without the
env's RNG. Splits follow the hash rule on the key; the structural cells `table/join` and
`lookup/mix` (lookup + arithmetic) exist only in `heldout`. Only the standard library is needed to
solve any task; `solution_code` and `first_calls` give the reference plan (the expert's and ToolRL's).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from creditgym.envs.base import Task, split_of_key
from creditgym.envs.parsing import normalize_answer

__all__ = [
    "GENERATOR_VERSION",
    "HELDOUT_KINDS",
    "KINDS",
    "TASK_TYPES",
    "TaskSpecError",
    "build_task",
    "first_calls",
    "generate_task",
    "needed_tools",
    "solution_code",
    "split_of",
]

GENERATOR_VERSION = 1  # bump when a change alters generated tasks, then rerun build_data
TASK_TYPES = ("arith", "table", "lookup", "text")
# kinds per (type, difficulty); heldout adds HELDOUT_KINDS
KINDS: dict[str, dict[int, tuple[str, ...]]] = {
    "arith": {1: ("expr",), 2: ("expr",), 3: ("expr",)},
    "table": {1: ("count", "sumqty"), 2: ("revenue", "meanqty", "argmax"), 3: ("filtered", "argmaxrev")},
    "lookup": {1: ("total",), 2: ("total",), 3: ("total",)},
    "text": {1: ("countword", "nthword"), 2: ("countword", "nthword", "lineswith"), 3: ("countword", "nthword", "lineswith")},
}
HELDOUT_KINDS: dict[str, dict[int, tuple[str, ...]]] = {"table": {3: ("join",)}, "lookup": {2: ("mix",), 3: ("mix",)}}
_RESERVED = {("table", "join"), ("lookup", "mix")}

REGIONS = ("North", "South", "East", "West", "Central")
PRODUCTS = ("anvil", "beacon", "cog", "dynamo", "easel", "flange", "gimbal", "hinge", "ingot", "joist", "kettle", "lathe")
CATEGORIES = ("hardware", "tools", "fixtures")
CUSTOMERS = ("Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Gray", "Harper", "Indy", "Jules")
WORDS = ("amber", "birch", "cobalt", "dune", "ember", "fjord", "garnet", "heron", "indigo", "juniper", "kelp",
         "lotus", "maple", "nectar", "onyx", "pebble", "quartz", "raven", "saffron", "thistle", "umber", "violet",
         "willow", "yarrow", "zephyr", "alder", "basalt", "cedar", "delta", "egret")

TABLE_INTRO = ("The file orders.csv (columns: order_id, customer, region, product, quantity, unit_price) lists "
               "orders; unit_price is in dollars.")
JOIN_INTRO = " The file products.csv (columns: product, category) gives each product's category."
LOOKUP_INTRO = "The key-value store maps each SKU (like SKU-1234) to its unit price in dollars."


class TaskSpecError(ValueError):
    """A task key or configuration that cannot be built; the message says what to use instead."""


@dataclass(frozen=True)
class _Built:
    text: str
    gold: tuple[str, ...]
    check: str  # "numeric" or "em"
    params: dict[str, Any]
    files: dict[str, str]
    kv: dict[str, str]


def split_of(ttype: str, kind: str, key: str) -> str:
    """The split of a key: the hash rule, except that reserved structural cells are heldout only."""
    return "heldout" if (ttype, kind) in _RESERVED else split_of_key(key)


def needed_tools(ttype: str, tools: Sequence[str]) -> str | None:
    """None if the built-in tool groups `tools` can solve `ttype`, else what is missing."""
    have = set(tools)
    need = {
        "arith": ({"calculator", "python"}, "calculator or python"),
        "table": ({"python"}, "python"),
        "lookup": ({"kv"}, "kv (and calculator or python)"),
        "text": ({"python"}, "python"),
    }[ttype]
    if not have & need[0] or (ttype == "lookup" and not have & {"calculator", "python"}):
        return need[1]
    return None


def _money(cents: int) -> tuple[str, ...]:
    text = f"{cents / 100:.2f}"
    return (text, "$" + text)


# --------------------------------------------------------------------------- builders
def _arith(rng: np.random.Generator, d: int) -> _Built:
    n_ops = {1: 2, 2: int(rng.integers(3, 5)), 3: int(rng.integers(5, 7))}[d]
    lo, hi = {1: (4, 5), 2: (6, 8), 3: (9, 12)}[d]

    def num() -> int:
        k = int(rng.integers(lo, hi + 1))
        return int(rng.integers(10 ** (k - 1), 10**k))

    expr, value = str(num()), None
    value = int(expr)
    for i in range(n_ops):
        op = str(rng.choice(["+", "-", "*"] if i < 3 else ["+", "-"]))
        b = num()
        value = {"+": value + b, "-": value - b, "*": value * b}[op]
        expr = f"({expr} {op} {b})" if i < n_ops - 1 else f"{expr} {op} {b}"
    return _Built(f"Compute {expr}. Give the exact integer.", (str(value),), "numeric", {"expression": expr}, {}, {})


def _orders(rng: np.random.Generator, d: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    n = int(rng.integers(*{1: (20, 61), 2: (60, 201), 3: (200, 401)}[d]))
    rows = []
    for i in range(n):
        rows.append({
            "order_id": 1000 + i,
            "customer": str(rng.choice(CUSTOMERS)),
            "region": str(rng.choice(REGIONS)),
            "product": str(rng.choice(PRODUCTS)),
            "quantity": int(rng.integers(1, 21)),
            "cents": int(rng.integers(100, 10000)),
        })
    cats = {p: str(rng.choice(CATEGORIES)) for p in PRODUCTS}
    return rows, cats


def _csv(rows: list[dict[str, Any]]) -> str:
    lines = ["order_id,customer,region,product,quantity,unit_price"]
    lines += [f"{r['order_id']},{r['customer']},{r['region']},{r['product']},{r['quantity']},{r['cents'] / 100:.2f}"
              for r in rows]
    return "\n".join(lines) + "\n"


def _unique_argmax(totals: Mapping[str, int]) -> str | None:
    best = max(totals.values())
    winners = [k for k, v in totals.items() if v == best]
    return winners[0] if len(winners) == 1 else None


def _table(rng: np.random.Generator, d: int, kind: str) -> _Built | None:
    rows, cats = _orders(rng, d)
    files = {"orders.csv": _csv(rows)}
    region, product = str(rng.choice(REGIONS)), str(rng.choice(PRODUCTS))
    sel_r = [r for r in rows if r["region"] == region]
    sel_p = [r for r in rows if r["product"] == product]
    intro = TABLE_INTRO
    params: dict[str, Any] = {"region": region, "product": product}
    gold: tuple[str, ...]
    if kind == "count":
        q, gold, check = f"How many orders come from the {region} region?", (str(len(sel_r)),), "numeric"
    elif kind == "sumqty":
        q = f"What is the total quantity ordered in the {region} region?"
        gold, check = (str(sum(r["quantity"] for r in sel_r)),), "numeric"
    elif kind == "revenue":
        q = f"What is the total revenue (quantity times unit_price) of product {product}? Round to 2 decimals."
        gold, check = _money(sum(r["quantity"] * r["cents"] for r in sel_p)), "numeric"
    elif kind == "meanqty":
        if not sel_p:
            return None
        q = f"What is the mean quantity per order of product {product}? Round to 2 decimals."
        gold, check = (f"{sum(r['quantity'] for r in sel_p) / len(sel_p):.2f}",), "numeric"
    elif kind == "argmax":
        win = _unique_argmax({g: sum(r["quantity"] for r in rows if r["region"] == g) for g in REGIONS})
        if win is None:
            return None
        q, gold, check = "Which region has the largest total quantity?", (win,), "em"
    elif kind == "filtered":
        k = int(rng.integers(5, 16))
        params["min_qty"] = k
        q = (f"What is the total revenue (quantity times unit_price) of orders in the {region} region with quantity "
             f"at least {k}? Round to 2 decimals.")
        gold, check = _money(sum(r["quantity"] * r["cents"] for r in sel_r if r["quantity"] >= k)), "numeric"
    elif kind == "argmaxrev":
        win = _unique_argmax({p: sum(r["quantity"] * r["cents"] for r in sel_r if r["product"] == p) for p in PRODUCTS})
        if win is None:
            return None
        q = f"Which product has the largest total revenue (quantity times unit_price) in the {region} region?"
        gold, check = (win,), "em"
    elif kind == "join":
        cat = str(rng.choice(CATEGORIES))
        params["category"] = cat
        intro += JOIN_INTRO
        files["products.csv"] = "product,category\n" + "".join(f"{p},{cats[p]}\n" for p in PRODUCTS)
        q = f"What is the total revenue (quantity times unit_price) of the {cat} category? Round to 2 decimals."
        gold, check = _money(sum(r["quantity"] * r["cents"] for r in rows if cats[r["product"]] == cat)), "numeric"
    else:
        raise TaskSpecError(f"unknown table kind {kind!r}")
    return _Built(f"{intro} {q}", gold, check, params, files, {})


def _discounted(total_cents: int, pct: int) -> tuple[str, ...]:
    """`total * (1 - pct/100)` rounded to cents; an exact half cent accepts both neighbours."""
    v = total_cents * (100 - pct)  # in 1/10000 dollars
    lo, rem = divmod(v, 100)
    cents = [lo] if rem < 50 else ([lo + 1] if rem > 50 else [lo, lo + 1])
    return tuple(f"{c / 100:.2f}" for c in cents)


def _lookup(rng: np.random.Generator, d: int, kind: str) -> _Built:
    n = int(rng.integers(50, 501))
    skus = sorted({f"SKU-{int(x):04d}" for x in rng.choice(9000, size=n, replace=False) + 1000})
    cents = {s: int(rng.integers(99, 20000)) for s in skus}
    k = {1: 2, 2: 3, 3: 4}[d]
    picked = [str(s) for s in rng.choice(skus, size=k, replace=False)]
    qty = [int(q) for q in rng.integers(1, 10, size=k)]
    items = [f"{q} × {s}" for q, s in zip(qty, picked)]
    listing = ", ".join(items[:-1]) + " and " + items[-1]
    total = sum(q * cents[s] for q, s in zip(qty, picked))
    params: dict[str, Any] = {"items": [[q, s] for q, s in zip(qty, picked)]}
    kv = {s: f"{c / 100:.2f}" for s, c in cents.items()}
    if kind == "total":
        q, gold = f"What do {listing} cost in total? Round to 2 decimals.", _money(total)
    elif kind == "mix":
        pct = int(rng.choice([5, 10, 15, 20, 25]))
        params["discount_pct"] = pct
        q = f"What do {listing} cost in total after a {pct}% discount? Round to 2 decimals."
        gold = _discounted(total, pct)
    else:
        raise TaskSpecError(f"unknown lookup kind {kind!r}")
    return _Built(f"{LOOKUP_INTRO} {q}", gold, "numeric", params, {}, kv)


def _text(rng: np.random.Generator, d: int, kind: str) -> _Built | None:
    n_lines = int(rng.integers(*{1: (5, 11), 2: (20, 41), 3: (60, 121)}[d]))
    vocab = list(rng.choice(WORDS, size={1: 8, 2: 14, 3: 22}[d], replace=False))
    lines = [[str(w) for w in rng.choice(vocab, size=int(rng.integers(6, 13)))] for _ in range(n_lines)]
    files = {"notes.txt": "\n".join(" ".join(ln) for ln in lines) + "\n"}
    word = str(rng.choice(vocab))
    intro = f"The file notes.txt holds {n_lines} lines of words separated by single spaces."
    params: dict[str, Any] = {"word": word}
    if kind == "countword":
        q, gold, check = f"How many times does the word '{word}' appear in notes.txt?", (str(sum(ln.count(word) for ln in lines)),), "numeric"
    elif kind == "lineswith":
        q = f"How many lines of notes.txt contain the word '{word}'?"
        gold, check = (str(sum(word in ln for ln in lines)),), "numeric"
    elif kind == "nthword":
        j = int(rng.integers(1, n_lines + 1))
        k = int(rng.integers(1, len(lines[j - 1]) + 1))
        params.update(line=j, position=k)
        q, gold, check = f"What is word {k} of line {j} of notes.txt (both counted from 1)?", (lines[j - 1][k - 1],), "em"
    else:
        raise TaskSpecError(f"unknown text kind {kind!r}")
    return _Built(f"{intro} {q}", gold, check, params, files, {})


def _parse_key(key: str) -> tuple[str, int, str, int]:
    try:
        ttype, dpart, kind, sub = key.split("-")
        d = int(dpart[1:])
        if ttype not in TASK_TYPES or not dpart.startswith("d") or d not in (1, 2, 3):
            raise ValueError
        return ttype, d, kind, int(sub)
    except ValueError as e:
        raise TaskSpecError(f"bad tools task key {key!r}: expected '<type>-d<1-3>-<kind>-<int>', e.g. 'arith-d1-expr-42'") from e


def build_task(task_id: str) -> Task:
    """Rebuild the task of `task_id = "tools/<split>/<key>"` (no RNG needed)."""
    parts = task_id.split("/")
    if len(parts) != 3 or parts[0] != "tools":
        raise TaskSpecError(f"bad tools task id {task_id!r}: expected 'tools/<split>/<key>'")
    split, key = parts[1], parts[2]
    ttype, d, kind, sub = _parse_key(key)
    rng = np.random.default_rng(sub)
    if ttype == "arith":
        built: _Built | None = _arith(rng, d)
    elif ttype == "table":
        built = _table(rng, d, kind)
    elif ttype == "lookup":
        built = _lookup(rng, d, kind)
    else:
        built = _text(rng, d, kind)
    if built is None:
        raise TaskSpecError(f"task key {key!r} has no well-defined answer; draw another subseed")
    private = {"type": ttype, "kind": kind, "check": built.check, "params": built.params,
               "files": built.files, "kv": built.kv}
    return Task(task_id, split, built.text, built.gold, d, private)


def _leaks(task: Task) -> bool:
    toks = normalize_answer(task.prompt).split()
    for g in task.gold:
        gt = normalize_answer(g).split()
        if gt and any(toks[i : i + len(gt)] == gt for i in range(len(toks) - len(gt) + 1)):
            return True
    return False


def generate_task(rng: np.random.Generator, split: str, task_types: Sequence[str] = TASK_TYPES,
                  difficulty: int | Sequence[int] = 1, max_tries: int = 1000) -> Task:
    """Draw a task of the split: rejection-sample keys (<= `max_tries`) until one lands in `split`
    and has a well-defined answer absent from its own text."""
    diffs = [int(difficulty)] if isinstance(difficulty, (int, np.integer)) else [int(x) for x in difficulty]
    for _ in range(max_tries):
        ttype = str(task_types[int(rng.integers(len(task_types)))])
        d = diffs[int(rng.integers(len(diffs)))]
        kinds = list(KINDS[ttype][d])
        if split == "heldout":
            kinds += list(HELDOUT_KINDS.get(ttype, {}).get(d, ()))
        kind = kinds[int(rng.integers(len(kinds)))]
        key = f"{ttype}-d{d}-{kind}-{int(rng.integers(2**31))}"
        if split_of(ttype, kind, key) != split:
            continue
        try:
            task = build_task(f"tools/{split}/{key}")
        except TaskSpecError:
            continue
        if not _leaks(task):
            return task
    raise RuntimeError(f"no {split} task found in {max_tries} tries for task_types={tuple(task_types)}, "
                       f"difficulty={difficulty}")


# --------------------------------------------------------------------------- reference plan
def solution_code(kind: str, params: Mapping[str, Any]) -> str:
    """Python that prints the answer of a table or text task (the reference plan's code)."""
    head = "import csv\nrows = list(csv.DictReader(open('orders.csv')))\n"
    rev = "float(r['quantity']) * float(r['unit_price'])"
    reg, prod = params.get("region"), params.get("product")
    codes = {
        "count": head + f"print(sum(1 for r in rows if r['region'] == {reg!r}))\n",
        "sumqty": head + f"print(sum(int(r['quantity']) for r in rows if r['region'] == {reg!r}))\n",
        "revenue": head + f"print(f\"{{sum({rev} for r in rows if r['product'] == {prod!r}):.2f}}\")\n",
        "meanqty": head + f"q = [int(r['quantity']) for r in rows if r['product'] == {prod!r}]\nprint(f\"{{sum(q) / len(q):.2f}}\")\n",
        "argmax": head + "t = {}\nfor r in rows:\n    t[r['region']] = t.get(r['region'], 0) + int(r['quantity'])\nprint(max(t, key=t.get))\n",
        "filtered": head + f"print(f\"{{sum({rev} for r in rows if r['region'] == {reg!r} and int(r['quantity']) >= {params.get('min_qty')}):.2f}}\")\n",
        "argmaxrev": head + f"t = {{}}\nfor r in rows:\n    if r['region'] == {reg!r}:\n        t[r['product']] = t.get(r['product'], 0) + {rev}\nprint(max(t, key=t.get))\n",
        "join": head + "cat = {p['product']: p['category'] for p in csv.DictReader(open('products.csv'))}\n"
                + f"print(f\"{{sum({rev} for r in rows if cat[r['product']] == {params.get('category')!r}):.2f}}\")\n",
        "countword": f"words = open('notes.txt').read().split()\nprint(words.count({params.get('word')!r}))\n",
        "lineswith": f"lines = open('notes.txt').read().splitlines()\nprint(sum({params.get('word')!r} in ln.split() for ln in lines))\n",
        "nthword": f"lines = open('notes.txt').read().splitlines()\nprint(lines[{params.get('line', 1)} - 1].split()[{params.get('position', 1)} - 1])\n",
    }
    if kind not in codes:
        raise TaskSpecError(f"no solution code for kind {kind!r}")
    return codes[kind]


def first_calls(ttype: str, kind: str, params: Mapping[str, Any], tools: Sequence[str]) -> list[dict[str, Any]]:
    """The reference plan's first-turn calls (`{"name", "arguments"}`), given the env's tool groups."""
    if ttype == "arith":
        if "calculator" in tools:
            return [{"name": "calculator", "arguments": {"expression": params["expression"]}}]
        return [{"name": "python", "arguments": {"code": f"print({params['expression']})\n"}}]
    if ttype == "lookup":
        return [{"name": "kv_get", "arguments": {"key": s}} for _, s in params["items"]]
    calls = []
    if ttype == "table" and "files" in tools:
        calls.append({"name": "read_file", "arguments": {"path": "orders.csv", "limit": 300}})
    calls.append({"name": "python", "arguments": {"code": solution_code(kind, params)}})
    return calls


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=True)
