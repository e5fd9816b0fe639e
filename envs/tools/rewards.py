"""Answer checking and the Tools rewards: binary, ReTool, ToolRL, OTC-PPO (ENVS.md section 3).

* `retool` (ReTool, arXiv 2504.11536): outcome only, +1 correct, -1 otherwise.
* `toolrl` (ToolRL, arXiv 2504.13958): R_format in {0, 1} plus R_correct in [-3, 3] from matching the
  first turn's calls with the reference plan's: tool-name Jaccard, parameter-name Jaccard per
  matched call and exact parameter values, summed and rescaled linearly by their maximum.
* OTC-PPO (arXiv 2504.14870, METHODS.md section 5): r_tool = cos(m*pi / (2m + c)), 1 at m = 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from creditgym.envs.parsing import exact_match, normalize_answer

__all__ = ["check_answer", "otc_ppo_tool", "parse_number", "toolrl_correct"]

_NUM_JUNK = re.compile(r"[\s,$]")


def parse_number(text: str) -> float | None:
    """The number in `text` after removing `$`, `,` and spaces, or None."""
    t = _NUM_JUNK.sub("", text)
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", t):
        return None
    try:
        return float(t)
    except ValueError:
        return None


def check_answer(answer: str, gold: Sequence[str], check: str = "numeric") -> bool:
    """`numeric`: some gold within relative tolerance 1e-6 (text golds by EM); `em`: SQuAD-normalized
    exact match; `contains`: a normalized gold occurs in the normalized answer."""
    if check == "numeric":
        a = parse_number(answer)
        for g in gold:
            gv = parse_number(g)
            if gv is None:
                if exact_match(answer, [g]):
                    return True
            elif a is not None and math.isclose(a, gv, rel_tol=1e-6, abs_tol=1e-9):
                return True
        return False
    if check == "em":
        return bool(exact_match(answer, gold))
    if check == "contains":
        padded = f" {normalize_answer(answer)} "
        return any(f" {normalize_answer(g)} " in padded for g in gold if normalize_answer(g))
    raise ValueError(f"check must be 'numeric', 'em' or 'contains', got {check!r}")


def otc_ppo_tool(m: int, c: float = 1.0) -> float:
    """OTC-PPO's tool factor cos(m*pi / (2m + c)) for m tool calls (1 at m = 0); arXiv 2504.14870."""
    return 1.0 if m == 0 else math.cos(m * math.pi / (2 * m + c))


def _jaccard(a: set[str], b: set[str]) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def toolrl_correct(pred: Sequence[Mapping[str, Any]], gold: Sequence[Mapping[str, Any]]) -> float:
    """ToolRL's R_correct in [-3, 3] for predicted vs reference calls (`{"name", "arguments"}` dicts).

    r_name = Jaccard of tool-name sets; calls are matched greedily in reference order to the first
    unused predicted call of the same name; r_param = sum over matched pairs of the Jaccard of their
    parameter names; r_value = sum over matched pairs of the reference parameters given exactly.
    R_correct = 6 * (r_name + r_param + r_value) / S_max - 3 with S_max = 1 + |G| + sum_g |keys(g)|.
    """
    r_name = _jaccard({str(p["name"]) for p in pred}, {str(g["name"]) for g in gold})
    used: set[int] = set()
    r_param = r_value = 0.0
    for g in gold:
        for i, p in enumerate(pred):
            if i not in used and p["name"] == g["name"]:
                used.add(i)
                ga, pa = dict(g.get("arguments") or {}), dict(p.get("arguments") or {})
                r_param += _jaccard(set(ga), set(pa))
                r_value += sum(1.0 for k, v in ga.items() if k in pa and pa[k] == v)
                break
    s_max = 1 + len(gold) + sum(len(g.get("arguments") or {}) for g in gold)
    return 6.0 * (r_name + r_param + r_value) / s_max - 3.0
