"""Search rewards: Search-R1's structure-format reward and OTC's tool-efficiency terms.

`em_format` follows Search-R1 `verl/utils/reward_score/qa_em_format.py` (arXiv 2503.09516) with
structure 0.2, final-format 0.1 and retrieval 0 (`scripts/nq_hotpotqa/v0.3`). OTC is "OTC: Optimal
Tool Calls via Reinforcement Learning" (arXiv 2504.14870); the product form alpha * r_tool * r_answer
(alpha = 1) and the GRPO mapping follow METHODS.md section 5.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict
from collections.abc import Sequence

from creditgym.trajectory import Episode

__all__ = ["em_format_reward", "is_well_formed_reply", "otc_grpo", "otc_grpo_tool", "otc_ppo_tool"]

_WELL_FORMED = re.compile(r"^\s*<think>.+?</think>\s*(<search>.+?</search>|<answer>.+?</answer>)\s*$", re.DOTALL)


def is_well_formed_reply(reply: str) -> bool:
    """One reply of a well-formed episode: a think block, then exactly one search or answer."""
    return _WELL_FORMED.match(reply) is not None


def em_format_reward(correct: bool, well_formed: bool, answered: bool) -> float:
    """Search-R1's five cells: 1.0 / 0.8 (correct, malformed) / 0.2 (wrong, well-formed) /
    0.1 (wrong, malformed, answered) / 0 (no answer)."""
    if not answered:
        return 0.0
    if correct:
        return 1.0 if well_formed else 0.8
    return 0.2 if well_formed else 0.1


def otc_ppo_tool(m: int, c: float = 1.0) -> float:
    """OTC-PPO: r_tool = cos(m*pi / (2m + c)), 1 at m = 0."""
    if m <= 0:
        return 1.0
    return math.cos(m * math.pi / (2 * m + c))


def otc_grpo_tool(m: int, n: int, c: float = 1.0) -> float:
    """OTC-GRPO with n the group's fewest calls among correct episodes (0 if none):
    f(m,n) = 0 if m = n = 0, m if n = 0, else 2nm/(m+n); r_tool = 1 if f = n = 0,
    cos(m*pi/(2m+c)) if n = 0, else sin(f*pi/(2n))."""
    if n == 0:
        return 1.0 if m == 0 else otc_ppo_tool(m, c)
    f = 2 * n * m / (m + n)
    return math.sin(f * math.pi / (2 * n))


def otc_grpo(episodes: Sequence[Episode], c: float = 1.0) -> list[Episode]:
    """Rewrite each episode's last-turn reward with OTC-GRPO: the answer term becomes
    em * r_tool(m, n), m = `outcome["n_search"]`, n = the fewest searches among the correct
    episodes of its `group_id` (n = 0, the PPO form, when the group has none). The other additive
    terms (search cost, invalid penalties) are kept; `outcome` gets `answer`, `otc_tool`, `return`."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, ep in enumerate(episodes):
        groups[ep.group_id].append(i)
    out = list(episodes)
    for idxs in groups.values():
        correct = [int(episodes[i].outcome.get("n_search", 0)) for i in idxs if episodes[i].outcome.get("em", 0.0) >= 1.0]
        n = min(correct) if correct else 0
        for i in idxs:
            ep = episodes[i]
            if not ep.turns:
                continue
            m = int(ep.outcome.get("n_search", 0))
            r_tool = otc_grpo_tool(m, n, c)
            old_answer = float(ep.outcome.get("answer", ep.outcome.get("em", 0.0)))
            new_answer = float(ep.outcome.get("em", 0.0)) * r_tool
            last = ep.turns[-1]
            turns = (*ep.turns[:-1], dataclasses.replace(last, reward=last.reward - old_answer + new_answer))
            outcome = dict(ep.outcome)
            outcome.update(answer=new_answer, otc_tool=r_tool, **{"return": sum(t.reward for t in turns)})
            out[i] = dataclasses.replace(ep, turns=turns, outcome=outcome)
    return out
