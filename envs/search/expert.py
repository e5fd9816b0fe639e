"""Scripted expert and random baseline of the search family (ENVS.md section 2).

The expert reads only the env text: it inverts the public question grammar into a start entity
and a relation path, searches `"{entity} {relation keyword}"` for each hop, reads the object from the
document titled exactly as the entity with the relation's sentence patterns, and answers. When the
returned documents disagree about the fact (ZeroSearch-style noisy results), it searches again.
It reads both document layouts: Search-R1's `Doc i(Title: "X") text` and ZeroSearch's `Doc i: X. text`.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from creditgym.envs.parsing import find_blocks
from creditgym.envs.search.world import NOUN_PHRASES, QUESTIONS, RELATIONS, fact_patterns
from creditgym.registry import History

__all__ = ["WORDS", "invert_question", "parse_docs", "question_of", "read_fact", "search_expert", "search_random"]

_Q_PATTERNS = [
    (rel, re.compile("^" + re.escape(t).replace(re.escape("{x}"), "(?P<x>.+)") + "$")) for rel, t in QUESTIONS.items()
]
_NP_PREFIXES = [(rel, t.split("{x}")[0]) for rel, t in NOUN_PHRASES.items()]
_DOC_R1 = re.compile(r'^Doc \d+\(Title: "?(?P<title>.*?)"?\) ?(?P<text>.*)$')
_DOC_ZS = re.compile(r"^Doc \d+: (?P<title>[^.]*)\. ?(?P<text>.*)$")
_TURNS = re.compile(r"You have (\d+) replies")
WORDS = re.compile(r"[A-Za-z0-9]+")


def question_of(first_obs: str) -> str:
    idx = first_obs.rfind("Question:")
    return first_obs[idx + len("Question:") :].strip() if idx >= 0 else first_obs.strip()


def invert_question(question: str) -> tuple[str, list[str]] | None:
    """(start entity, relation path) of a generated question, or None if it is not one."""
    for rel, pat in _Q_PATTERNS:
        m = pat.match(question)
        if m is None:
            continue
        x, outer_first = m.group("x"), [rel]
        peeled = True
        while peeled:
            peeled = False
            for inner, prefix in _NP_PREFIXES:
                if x.startswith(prefix):
                    x, peeled = x[len(prefix) :], True
                    outer_first.append(inner)
                    break
        return x, outer_first[::-1]
    return None


def parse_docs(info_body: str) -> list[tuple[str, str]]:
    """(title, text) of each `Doc i...` line of an information block, in either layout."""
    out = []
    for line in info_body.split("\n"):
        line = line.strip()
        m = _DOC_R1.match(line) or _DOC_ZS.match(line)
        if m:
            out.append((m.group("title").strip(), m.group("text").strip()))
    return out


def read_fact(docs: list[tuple[str, str]], relation: str, subject: str) -> list[str]:
    """Objects the documents titled `subject` state for `relation` (one per matching sentence)."""
    found = []
    for title, text in docs:
        if title != subject:
            continue
        for sentence in re.split(r"(?<=\.)\s+", text):
            sentence = sentence.strip().rstrip(".")
            for pat in fact_patterns(relation, subject):
                m = pat.match(sentence)
                if m:
                    found.append(m.group("o"))
                    break
    return found


def _searches(ctx: History) -> list[tuple[str, str]]:
    """(query, information body) of each search so far."""
    out = []
    for action, obs in zip(ctx.action_texts, ctx.obs_texts[1:]):
        m = re.search(r"<(search|answer)>(.*?)</\1>", action, re.DOTALL)
        if m is None or m.group(1) != "search":
            continue
        info = find_blocks(obs, ["information"])
        out.append((" ".join(m.group(2).split()), info[0].body if info else ""))
    return out


def _turns_left(ctx: History) -> int:
    m = _TURNS.search(ctx.obs_texts[0]) if ctx.obs_texts else None
    total = int(m.group(1)) if m else 6
    return total - len(ctx.action_texts)


def _reply(ctx: History, kind: str, text: str, thought: str) -> str:
    """One action block, with a `<think>` block only when the prompt asks for one (short prompts,
    such as the quickstart's, do not: the policy then imitates shorter actions)."""
    if ctx.obs_texts and "<think>" not in ctx.obs_texts[0]:
        return f"<{kind}>{text}</{kind}>"
    return f"<think>{thought}</think>\n<{kind}>{text}</{kind}>"


def search_expert(ctx: History, rng: np.random.Generator) -> str:
    """Hop by hop: search, read the fact from the entity's own document, re-search on disagreement."""
    parsed = invert_question(question_of(ctx.obs_texts[0]))
    if parsed is None:
        return _reply(ctx, "answer", "unknown", "The question is not one I can decompose.")
    entity, path = parsed
    history = _searches(ctx)
    for hop, rel in enumerate(path):
        query = f"{entity} {RELATIONS[rel].keyword}"
        claims: Counter[str] = Counter()
        resolved = None
        for q, body in history:
            if q != query:
                continue
            objs = read_fact(parse_docs(body), rel, entity)
            claims.update(objs)
            if len(set(objs)) == 1:
                resolved = objs[0]
                break
        if resolved is None:
            if _turns_left(ctx) <= 1:
                guess = claims.most_common(1)[0][0] if claims else entity
                return _reply(ctx, "answer", guess, "Out of replies: answer with the best guess.")
            return _reply(ctx, "search", query, f"Hop {hop + 1}: find the {rel.replace('_', ' ')} of {entity}.")
        entity = resolved
    return _reply(ctx, "answer", entity, "All hops are resolved.")


def search_random(ctx: History, rng: np.random.Generator) -> str:
    """Question words as queries, a seen title (else a question word) as the answer."""
    words = WORDS.findall(question_of(ctx.obs_texts[0])) or ["search"]
    if _turns_left(ctx) > 1 and rng.random() < 0.5:
        k = int(rng.integers(1, min(3, len(words)) + 1))
        picks = rng.choice(len(words), size=k, replace=False)
        return _reply(ctx, "search", " ".join(words[int(i)] for i in sorted(picks)), "Try some words.")
    titles = sorted({t for _, body in _searches(ctx) for t, _ in parse_docs(body)})
    pool = titles or words
    return _reply(ctx, "answer", pool[int(rng.integers(len(pool)))], "Guess.")
