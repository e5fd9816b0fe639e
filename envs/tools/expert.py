"""Scripted expert and random baseline for the Tools family (ENVS.md section 3).

The expert parses the templated task from the reset observation and runs the reference plan:
arith -> calculator (or python); table -> read_file + python; lookup -> kv_get x k, then the
calculator; text -> python; then it answers from the last tool result. The random baseline picks a
random listed tool with schema-sampled arguments, or answers a random number. Both read only
`ctx.obs_texts` and `ctx.action_texts`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from creditgym.envs.parsing import find_blocks
from creditgym.envs.tools.tasks import first_calls
from creditgym.registry import History

__all__ = ["parse_task", "tools_expert", "tools_random"]

_TABLE = [
    (r"How many orders come from the (\w+) region\?", "count", ("region",)),
    (r"What is the total quantity ordered in the (\w+) region\?", "sumqty", ("region",)),
    (r"total revenue \(quantity times unit_price\) of product (\w+)\?", "revenue", ("product",)),
    (r"mean quantity per order of product (\w+)\?", "meanqty", ("product",)),
    (r"Which region has the largest total quantity\?", "argmax", ()),
    (r"of orders in the (\w+) region with quantity at least (\d+)\?", "filtered", ("region", "min_qty")),
    (r"Which product has the largest total revenue .* in the (\w+) region\?", "argmaxrev", ("region",)),
    (r"total revenue \(quantity times unit_price\) of the (\w+) category\?", "join", ("category",)),
]
_TEXT = [
    (r"How many times does the word '(\w+)' appear", "countword", ("word",)),
    (r"What is word (\d+) of line (\d+) of notes\.txt", "nthword", ("position", "line")),
    (r"How many lines of notes\.txt contain the word '(\w+)'", "lineswith", ("word",)),
]


def _declarations(first_obs: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    block = find_blocks(first_obs, ["tools"])
    for line in (block[0].body.splitlines() if block else []):
        try:
            d = json.loads(line)
            out[d["function"]["name"]] = d["function"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return out


def _groups(names: set[str]) -> tuple[str, ...]:
    groups = [g for g, member in (("calculator", "calculator"), ("python", "python"), ("files", "read_file"),
                                  ("kv", "kv_get")) if member in names]
    return tuple(groups)


def parse_task(task: str) -> tuple[str, str, dict[str, Any]] | None:
    """(type, kind, params) of a templated task text, or None for an unknown task."""
    m = re.search(r"Compute (.+)\. Give the exact integer\.", task)
    if m:
        return "arith", "expr", {"expression": m.group(1)}
    items = re.findall(r"(\d+) × (SKU-\d{4})", task)
    if items:
        params: dict[str, Any] = {"items": [[int(q), s] for q, s in items]}
        d = re.search(r"after a (\d+)% discount", task)
        if d:
            params["discount_pct"] = int(d.group(1))
        return "lookup", "mix" if d else "total", params
    for table, ttype in ((_TABLE, "table"), (_TEXT, "text")):
        for pattern, kind, names in table:
            m = re.search(pattern, task)
            if m:
                vals = [int(v) if v.isdigit() else v for v in m.groups()]
                return ttype, kind, dict(zip(names, vals))
    return None


def _call(name: str, args: dict[str, Any]) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


def _last_results(ctx: History) -> list[dict[str, Any]]:
    if len(ctx.obs_texts) < 2:
        return []
    out = []
    for b in find_blocks(ctx.obs_texts[-1], ["tool_response"]):
        try:
            out.append(json.loads(b.body))
        except json.JSONDecodeError:
            out.append({"ok": False})
    return out


def _result_text(res: dict[str, Any]) -> str:
    r = res.get("result")
    if isinstance(r, dict):
        return str(r.get("stdout", "")).strip()
    return str(r if r is not None else "").strip()


def _answer(text: str) -> str:
    return f"<answer>{text}</answer>"


def tools_expert(ctx: History, rng: np.random.Generator) -> str:
    """Run the reference plan of the task in `ctx.obs_texts[0]`."""
    first = ctx.obs_texts[0]
    decls = _declarations(first)
    groups = _groups(set(decls))
    task = first.split("Task: ", 1)[-1]
    parsed = parse_task(task)
    step = len(ctx.action_texts)
    if parsed is None:
        return _answer("unknown")
    ttype, kind, params = parsed
    if step == 0:
        return "\n".join(_call(c["name"], c["arguments"]) for c in first_calls(ttype, kind, params, groups))
    results = _last_results(ctx)
    if ttype == "lookup" and step == 1:
        prices = [_result_text(r) for r in results]
        terms = " + ".join(f"{q} * {p}" for (q, _), p in zip(params["items"], prices))
        expr = f"({terms}) * {100 - params['discount_pct']} / 100" if "discount_pct" in params else terms
        if "calculator" in groups:
            return _call("calculator", {"expression": expr})
        return _call("python", {"code": f"print({expr})\n"})
    value = _result_text(results[-1]) if results else "0"
    if ttype == "lookup":
        try:
            value = f"{float(value):.2f}"
        except ValueError:
            pass
    return _answer(value)


def _sample_value(schema: dict[str, Any], words: list[str], rng: np.random.Generator) -> Any:
    kind = schema.get("type")
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        return int(rng.integers(low, low + 100))
    if kind == "number":
        return float(rng.integers(0, 1000))
    if kind == "boolean":
        return bool(rng.integers(2))
    n = int(rng.integers(1, 4))
    return " ".join(str(words[int(rng.integers(len(words)))]) for _ in range(n)) if words else "x"


def tools_random(ctx: History, rng: np.random.Generator) -> str:
    """A random listed tool with schema-sampled arguments (words from the observations), or a random
    number as the answer."""
    decls = _declarations(ctx.obs_texts[0])
    if not decls or rng.random() < 0.4:
        return _answer(str(int(rng.integers(0, 1000))))
    names = sorted(decls)
    name = names[int(rng.integers(len(names)))]
    params = decls[name].get("parameters", {})
    words = re.findall(r"[\w.\-]+", ctx.obs_texts[-1])[-200:]
    args = {}
    for key, sub in sorted(params.get("properties", {}).items()):
        if key in params.get("required", []) or rng.random() < 0.5:
            args[key] = _sample_value(sub, words, rng)
    return _call(name, args)
