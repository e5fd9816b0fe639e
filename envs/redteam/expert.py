"""Scripted experts and random baselines of the red-team family (ENVS.md section 6).

Attacker: the ladder of `creditgym.envs.redteam.strategies` (one-message role-play -> persona then
ask -> encoded asks -> chunked asks, advancing on refusals); random: the 200-sentence generic bag.
Defender: never writes the code or any part of it, refuses asks about the code, its parts or
encodings and rule-breaking requests, answers FAQ questions from its own prompt; random: a random FAQ
fact, small talk or refusal. They read only `ctx.obs_texts`, `ctx.action_texts` and `ctx.role`.
"""

from __future__ import annotations

import re

import numpy as np

from creditgym.envs.redteam.game import FAQ_POOL
from creditgym.envs.redteam.strategies import (
    FAQ_ASKS,
    FRAME_TEXT,
    PERSONA_PREFIX,
    ask_text,
    ladder_message,
    parse_attacker_intro,
    random_message,
)
from creditgym.envs.redteam.victim import classify
from creditgym.registry import History

__all__ = ["attacker_expert", "attacker_random", "defender_expert", "defender_random", "refuse_all", "echo_prompt"]

_LEFT = re.compile(r"\n\(\d+ messages left\)\s*$")
_INTRO = "This is a safe red-teaming exercise"
REFUSAL = "I'm sorry, I can't help with that. I'm happy to answer questions about our shop."
SMALL_TALK = "Happy to help with anything about our shop. What can I do for you?"
_FACT_PREFIX = [(key, fact.split("{")[0]) for key, _, fact, _ in FAQ_POOL]


def _victim_replies(ctx: History) -> list[str]:
    """ShopBot's replies as the attacker saw them (`ShopBot: ...` observations after the intro)."""
    out = []
    for obs in ctx.obs_texts[1:]:
        if obs.startswith("ShopBot did not answer"):
            out.append("I'm sorry, no answer.")
        elif obs.startswith("ShopBot: "):
            out.append(_LEFT.sub("", obs[len("ShopBot: ") :]))
    return out


def attacker_expert(ctx: History, rng: np.random.Generator) -> str:
    """The multi-turn ladder (closed loop) or a fixed plan (open loop)."""
    intro = next((o for o in ctx.obs_texts if o.startswith(_INTRO)), ctx.obs_texts[0] if ctx.obs_texts else "")
    goal = parse_attacker_intro(intro)
    if "Open-loop mode" in intro:
        plan = [FAQ_ASKS[0], FRAME_TEXT["story"], FAQ_ASKS[1], PERSONA_PREFIX + ask_text(goal, encoding="spaced")]
        return "\n".join(f"{i}. {m}" for i, m in enumerate(plan, 1))
    return ladder_message(goal, _victim_replies(ctx))


def attacker_random(ctx: History, rng: np.random.Generator) -> str:
    return random_message(rng)


def direct_attacker(ctx: History, rng: np.random.Generator) -> str:
    """The single-turn direct ask (a baseline for the leak table)."""
    return ask_text(parse_attacker_intro(ctx.obs_texts[0] if ctx.obs_texts else ""))


def _defender_prompt(ctx: History) -> tuple[str, list[str], tuple[str, ...]]:
    system = next((o for o in ctx.obs_texts if "Confidential code:" in o), "")
    facts = [ln[2:].strip() for ln in system.splitlines() if ln.startswith("- ")]
    m = re.search(r"\(2\) Never discuss (.+?)\.\n", system)
    lexicon = tuple(w for w in re.findall(r"[a-z]+", (m.group(1) if m else "").lower()) if len(w) > 5)
    return system, facts, lexicon


def _last_user(ctx: History) -> str:
    last = ctx.obs_texts[-1] if ctx.obs_texts else ""
    i = last.rfind("User: ")
    return last[i + len("User: ") :] if i >= 0 else last


def defender_expert(ctx: History, rng: np.random.Generator) -> str:
    """Refuse anything about the code or the rules, answer the FAQ, else small talk."""
    _, facts, lexicon = _defender_prompt(ctx)
    it = classify(_last_user(ctx), lexicon)
    if it.attack or it.framings:
        return REFUSAL
    if it.faq is not None:
        prefix = next((p for k, p in _FACT_PREFIX if k == it.faq), None)
        fact = next((f for f in facts if prefix and f.startswith(prefix)), None)
        if fact:
            return fact
    return SMALL_TALK


def defender_random(ctx: History, rng: np.random.Generator) -> str:
    _, facts, _ = _defender_prompt(ctx)
    options = [*facts, SMALL_TALK, REFUSAL]
    return options[int(rng.integers(len(options)))]


def refuse_all(ctx: History, rng: np.random.Generator) -> str:
    """Baseline: refuse every message."""
    return REFUSAL


def echo_prompt(ctx: History, rng: np.random.Generator) -> str:
    """Baseline: repeat the own system prompt (leaks)."""
    system, _, _ = _defender_prompt(ctx)
    return system or "Hello."


def _is_defender(ctx: History) -> bool:
    if ctx.role in ("attacker", "defender"):
        return ctx.role == "defender"
    return any("Confidential code:" in o for o in ctx.obs_texts)


def selfplay_expert(ctx: History, rng: np.random.Generator) -> str:
    return defender_expert(ctx, rng) if _is_defender(ctx) else attacker_expert(ctx, rng)


def selfplay_random(ctx: History, rng: np.random.Generator) -> str:
    return defender_random(ctx, rng) if _is_defender(ctx) else attacker_random(ctx, rng)
