"""Scripted policies of the self-search family (ENVS.md section 5).

SimSearch-v0 and SelfSearch-v0 with `source="responder"` are multi-turn search: they use the search
expert, which re-queries when the returned documents disagree. Inline SelfSearch has no honest
offline expert (it would need the model's own knowledge); its expert is a privileged oracle writer
that reads the public knowledge world (`creditgym.envs.selfsearch.knowledge_corpus`) and writes
every search result itself: it scores 1.0 with format 1.0, for reward and mask plumbing tests and
for SFT data.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from creditgym.envs.search.expert import (
    WORDS,
    invert_question,
    parse_docs,
    question_of,
    read_fact,
    search_expert,
    search_random,
)
from creditgym.envs.search.retrievers import format_search_r1
from creditgym.envs.search.world import RELATIONS
from creditgym.envs.selfsearch.tasks import knowledge_corpus
from creditgym.registry import History

__all__ = ["inline_oracle", "inline_random", "selfsearch_expert", "selfsearch_random"]

_INLINE_MARK = "what a search engine would return"


@functools.lru_cache(maxsize=1)
def _knowledge() -> dict[str, str]:
    """Title -> contents of the knowledge world's documents."""
    return {d["contents"].split("\n", 1)[0].strip('"'): d["contents"] for d in knowledge_corpus()}


def _is_inline(ctx: History) -> bool:
    return bool(ctx.obs_texts) and _INLINE_MARK in ctx.obs_texts[0]


def inline_oracle(ctx: History, rng: np.random.Generator) -> str:
    """Write the whole self-search: one search per hop with the knowledge document as its result."""
    parsed = invert_question(question_of(ctx.obs_texts[0]))
    if parsed is None:
        return "<think>I cannot decompose the question.</think><answer>unknown</answer>"
    entity, path = parsed
    parts = []
    for rel in path:
        contents = _knowledge().get(entity, "")
        info = format_search_r1([{"contents": contents}]) if contents else "\n\n<information>No results.</information>\n\n"
        parts.append(f"<think>I need the {rel.replace('_', ' ')} of {entity}.</think>\n"
                     f"<search>{entity} {RELATIONS[rel].keyword}</search>{info}")
        body = re.search(r"<information>(.*)</information>", info, re.DOTALL)
        found = read_fact(parse_docs(body.group(1) if body else ""), rel, entity)
        entity = found[0] if found else "unknown"
    parts.append(f"<think>So the answer is {entity}.</think>\n<answer>{entity}</answer>")
    return "".join(parts)


def inline_random(ctx: History, rng: np.random.Generator) -> str:
    """A well-formed self-search with question words as query, information and answer."""
    words = WORDS.findall(question_of(ctx.obs_texts[0])) or ["unknown"]

    def pick(k: int) -> str:
        return " ".join(words[int(i)] for i in rng.integers(len(words), size=k))

    return (f"<think>Let me search.</think><search>{pick(2)}</search><information>{pick(6)}</information>"
            f"<think>Guess.</think><answer>{pick(1)}</answer>")


def selfsearch_expert(ctx: History, rng: np.random.Generator) -> str:
    return inline_oracle(ctx, rng) if _is_inline(ctx) else search_expert(ctx, rng)


def selfsearch_random(ctx: History, rng: np.random.Generator) -> str:
    return inline_random(ctx, rng) if _is_inline(ctx) else search_random(ctx, rng)
