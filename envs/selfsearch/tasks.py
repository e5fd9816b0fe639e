"""Self-search tasks: questions about the search family's train world (ENVS.md section 5).

Self-search needs a policy that can know the answers, so the knowledge is one public world (the
search family's train world, seed 0; `knowledge_corpus()` yields its documents for a knowledge SFT
stage) and splits are by question: the hash rule on `start entity + relation path`; heldout alone
holds the two reserved compositions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from creditgym.envs.base import SPLITS, Task, split_of_key
from creditgym.envs.search.tasks import (
    follow,
    has_reserved,
    is_acceptable,
    question_text,
    random_path,
    shared_ranks,
)
from creditgym.envs.search.world import ENTITY_TYPES, shared_world

__all__ = ["KNOWLEDGE_SEED", "generate_selfsearch_task", "knowledge_corpus", "selfsearch_task_from_id"]

KNOWLEDGE_SEED = 0
MAX_TRIES = 1000
_KEY = re.compile(r"^selfsearch/(train|test|heldout)/w0-e(\d+)-([a-z_.]+)$")


def knowledge_corpus() -> Iterator[dict[str, str]]:
    """The documents of the knowledge world (`{"id", "contents"}`), for a knowledge SFT stage."""
    world = shared_world(KNOWLEDGE_SEED)
    for e in world.entities:
        yield {"id": world.doc_id(e.idx), "contents": e.contents}


def _task(start: int, path: tuple[str, ...], split: str) -> Task:
    world = shared_world(KNOWLEDGE_SEED)
    chain = follow(world, start, path)
    if chain is None:
        raise ValueError(f"relation path {path} does not apply to entity {start}")
    return Task(
        task_id=f"selfsearch/{split}/w0-e{start}-{'.'.join(path)}",
        split=split,
        prompt=question_text(world, start, path),
        gold=world.gold(chain.answer),
        difficulty=len(path),
        private={"world_seed": KNOWLEDGE_SEED, "corpus": "shared", "chain": chain, "world": world},
    )


def _split_of(start: int, path: tuple[str, ...]) -> str:
    return "heldout" if has_reserved(path) else split_of_key(f"w0-e{start}-{'.'.join(path)}")


def generate_selfsearch_task(rng: np.random.Generator, split: str = "train", hops: tuple[int, int] = (1, 3)) -> Task:
    """A question about the knowledge world whose key lands in `split` (rejection sampling)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not (1 <= hops[0] <= hops[1] <= 4):
        raise ValueError(f"hops must be a range within 1..4, got {hops}")
    world, ranks = shared_world(KNOWLEDGE_SEED), shared_ranks(KNOWLEDGE_SEED)
    pools = {t: [e.idx for e in world.entities if e.type == t] for t in ENTITY_TYPES}
    for _ in range(MAX_TRIES):
        picked = random_path(rng, int(rng.integers(hops[0], hops[1] + 1)))
        if picked is None:
            continue
        kind, path = picked
        start = int(pools[kind][rng.integers(len(pools[kind]))])
        chain = follow(world, start, path)
        if chain is None or _split_of(start, path) != split:
            continue
        if any(ranks[(i, rel)] >= 3 for i, rel in zip(chain.entities, chain.path)):
            continue
        if is_acceptable(world, chain, split, question_text(world, start, path)):
            return _task(start, path, split)
    raise RuntimeError(f"no self-search {split} task with hops={hops} after {MAX_TRIES} tries")


def selfsearch_task_from_id(task_id: str) -> Task:
    m = _KEY.match(task_id)
    if m is None:
        raise ValueError(f"not a self-search task id: {task_id!r}; expected 'selfsearch/<split>/w0-e<entity>-<rel.rel>'")
    split, start, path = m.group(1), int(m.group(2)), tuple(m.group(3).split("."))
    if _split_of(start, path) != split:
        raise ValueError(f"task id {task_id!r}: that question belongs to split {_split_of(start, path)!r}")
    return _task(start, path, split)
