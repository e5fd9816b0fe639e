"""Novelty bonus for successful attacks, a batch transform over Episodes (ENVS.md section 6).

The bonus needs other episodes, so it lives outside the env (which stays deterministic):
beta * (1 - max cosine similarity of character-3-gram TF-IDF vectors to earlier successes), added to
the last turn of each successful attacker episode. "Earlier" = the archive, then the batch's own
successes in order. Pure: returns new episodes and the grown archive.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence

from creditgym.trajectory import Episode

__all__ = ["attack_text", "char_ngrams", "novelty_bonus", "tfidf_cosines"]


def attack_text(ep: Episode) -> str:
    """The attacker's messages of an episode, joined by newlines."""
    return "\n".join(t.action_text for t in ep.turns)


def char_ngrams(text: str, n: int = 3) -> Counter[str]:
    """Counts of character n-grams of the lowercased text (the whole text if shorter than n)."""
    t = text.lower()
    return Counter(t[i : i + n] for i in range(max(1, len(t) - n + 1)))


def tfidf_cosines(query: str, docs: Sequence[str], corpus: Sequence[str]) -> list[float]:
    """Cosine similarity of `query` to each doc in TF-IDF space; idf = ln((1 + N) / (1 + df)) + 1
    over `corpus` (smoothed, as scikit-learn's default)."""
    grams = [char_ngrams(d) for d in corpus]
    df: Counter[str] = Counter()
    for g in grams:
        df.update(g.keys())
    n = len(corpus)

    def vec(text: str) -> dict[str, float]:
        return {k: c * (math.log((1 + n) / (1 + df[k])) + 1.0) for k, c in char_ngrams(text).items()}

    q = vec(query)
    qn = math.sqrt(sum(v * v for v in q.values()))
    out = []
    for d in docs:
        v = vec(d)
        vn = math.sqrt(sum(x * x for x in v.values()))
        dot = sum(q[k] * v[k] for k in q.keys() & v.keys())
        out.append(dot / (qn * vn) if qn > 0 and vn > 0 else 0.0)
    return out


def novelty_bonus(episodes: Sequence[Episode], archive: Sequence[str] = (), beta: float = 0.1,
                  success_key: str = "success") -> tuple[list[Episode], tuple[str, ...]]:
    """Add beta * (1 - max similarity to earlier successes) to each successful attacker episode's
    last turn (outcome `novelty` and `return` updated); return (episodes, archive + new successes)."""
    texts = [attack_text(e) for e in episodes]
    wins = [i for i, e in enumerate(episodes) if e.role == "attacker" and e.outcome.get(success_key, 0) >= 1 and e.turns]
    corpus = list(archive) + [texts[i] for i in wins]
    seen = list(archive)
    out = list(episodes)
    for i in wins:
        sims = tfidf_cosines(texts[i], seen, corpus) if seen else []
        bonus = float(beta) * (1.0 - max(sims, default=0.0))
        ep = episodes[i]
        last = dataclasses.replace(ep.turns[-1], reward=ep.turns[-1].reward + bonus)
        outcome = {**ep.outcome, "novelty": bonus}
        if "return" in outcome:
            outcome["return"] = outcome["return"] + bonus
        out[i] = dataclasses.replace(ep, turns=(*ep.turns[:-1], last), outcome=outcome)
        seen.append(texts[i])
    return out, tuple(seen)
