"""Multi-hop questions over a world: chains, solvability, splits and task ids (ENVS.md section 2).

A k-hop task is a start entity and a relation path; its question nests k-1 noun phrases inside the
last relation's question. Shared corpus: one world per split (seeds 0/1/2); heldout alone holds the
compositions `spouse∘born_in` and `author∘works_for`. Episode corpus: a fresh 40-entity world per
task, split by the hash rule on the world seed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from creditgym.envs.base import SPLITS, Task, split_of_key
from creditgym.envs.parsing import normalize_answer
from creditgym.envs.search.retrievers import BM25Retriever, bm25_for_world
from creditgym.envs.search.world import (
    ENTITY_TYPES,
    NOUN_PHRASES,
    ORG,
    QUESTIONS,
    RELATIONS,
    WORK,
    YEAR,
    World,
    assemble_world,
    assign_facts,
    make_names,
    random_syllable,
    shared_world,
)

__all__ = [
    "GENERATOR_VERSION",
    "HELDOUT_COMPOSITIONS",
    "SHARED_SEEDS",
    "Chain",
    "generate_task",
    "question_text",
    "task_from_id",
]

GENERATOR_VERSION = 1
SHARED_SEEDS = {"train": 0, "test": 1, "heldout": 2}
HELDOUT_COMPOSITIONS = (("spouse", "born_in"), ("author", "works_for"))
MAX_TRIES = 1000
EPISODE_ENTITIES = 40


@dataclass(frozen=True)
class Chain:
    start: int
    path: tuple[str, ...]
    entities: tuple[int, ...]  # the entity of each hop (the documents needed), start first
    answer: int | str


def question_text(world: World, start: int, path: Sequence[str]) -> str:
    x = world.entities[start].name
    for rel in path[:-1]:
        x = NOUN_PHRASES[rel].format(x=x)
    return QUESTIONS[path[-1]].format(x=x)


def follow(world: World, start: int, path: Sequence[str]) -> Chain | None:
    cur: int | str = start
    ents = []
    for rel in path:
        if not isinstance(cur, int) or rel not in world.entities[cur].facts:
            return None
        ents.append(cur)
        cur = world.entities[cur].facts[rel]
    return Chain(start, tuple(path), tuple(ents), cur)


def has_reserved(path: Sequence[str]) -> bool:
    return any(tuple(path[i : i + 2]) in HELDOUT_COMPOSITIONS for i in range(len(path) - 1))


def _hop_query(world: World, idx: int, rel: str) -> str:
    return f"{world.entities[idx].name} {RELATIONS[rel].keyword}"


def hop_rank(world: World, index: BM25Retriever, idx: int, rel: str) -> int:
    """Rank (0 = best) of entity idx's document for the hop query `"{entity} {keyword}"`."""
    for r, (i, _) in enumerate(index.ranking(_hop_query(world, idx, rel))):
        if i == idx:
            return r
    return 1 << 30


@functools.lru_cache(maxsize=8)
def shared_ranks(seed: int) -> dict[tuple[int, str], int]:
    world, index = shared_world(seed), bm25_for_world(seed)
    return {(e.idx, rel): hop_rank(world, index, e.idx, rel) for e in world.entities for rel in e.facts}


def random_path(rng: np.random.Generator, hops: int) -> tuple[str, tuple[str, ...]] | None:
    kind = ENTITY_TYPES[rng.integers(len(ENTITY_TYPES))]
    path: list[str] = []
    cur = kind
    for _ in range(hops):
        rels = [r.name for r in RELATIONS.values() if r.subject == cur]
        if not rels:
            return None
        rel = rels[rng.integers(len(rels))]
        path.append(rel)
        cur = RELATIONS[rel].object
    return kind, tuple(path)


def is_acceptable(world: World, chain: Chain | None, split: str, question: str) -> bool:
    if chain is None:
        return False
    if has_reserved(chain.path) and split != "heldout":
        return False
    q = normalize_answer(question).split()
    for g in world.gold(chain.answer):
        n = normalize_answer(g).split()
        if any(q[i : i + len(n)] == n for i in range(len(q) - len(n) + 1)):
            return False
    return True


def _build_task(world: World, chain: Chain, split: str, key: str, hops: int, corpus: str) -> Task:
    question = question_text(world, chain.start, chain.path)
    return Task(
        task_id=f"search/{split}/{key}",
        split=split,
        prompt=question,
        gold=world.gold(chain.answer),
        difficulty=hops,
        private={"world_seed": world.seed, "corpus": corpus, "chain": chain, "world": world},
    )


def _sample_shared(rng: np.random.Generator, split: str, hops: tuple[int, int], distractors: int, topk: int) -> Task:
    seed = SHARED_SEEDS[split]
    world, ranks = shared_world(seed), shared_ranks(seed)
    pools = {t: [e.idx for e in world.entities if e.type == t and e.lookalikes >= distractors] for t in ENTITY_TYPES}
    for _ in range(MAX_TRIES):
        h = int(rng.integers(hops[0], hops[1] + 1))
        picked = random_path(rng, h)
        if picked is None or not pools[picked[0]]:
            continue
        kind, path = picked
        start = int(pools[kind][rng.integers(len(pools[kind]))])
        chain = follow(world, start, path)
        if chain is None or any(world.entities[i].lookalikes < distractors for i in chain.entities):
            continue
        if any(ranks[(i, rel)] >= topk for i, rel in zip(chain.entities, chain.path)):
            continue
        if is_acceptable(world, chain, split, question_text(world, start, path)):
            return _build_task(world, chain, split, f"shared-w{seed}-e{start}-{'.'.join(path)}", h, "shared")
    raise RuntimeError(
        f"no {split} task with hops={hops}, distractors={distractors}, topk={topk} after {MAX_TRIES} tries: "
        "lower distractors or raise topk"
    )


def episode_world(world_seed: int, hops: int, distractors: int, doc_noise: float, topk: int) -> tuple[World, Chain] | None:
    """A fresh 40-entity world and a solvable chain in it, or None (the seed is then skipped)."""
    rng = np.random.default_rng(world_seed)
    rows = make_names(EPISODE_ENTITIES, rng)
    types, names = [r[0] for r in rows], [r[1] for r in rows]
    facts = assign_facts(types, rng)
    base = assemble_world(world_seed, types, names, [0] * len(names), facts, doc_noise, rng)
    for _ in range(20):
        picked = random_path(rng, hops)
        if picked is None:
            continue
        kind, path = picked
        pool = [e.idx for e in base.entities if e.type == kind]
        if not pool:
            continue
        chain = follow(base, int(pool[rng.integers(len(pool))]), path)
        if chain is None:
            continue
        world = _add_lookalikes(base, types, names, facts, chain, distractors, doc_noise, rng)
        index = BM25Retriever([{"id": world.doc_id(e.idx), "contents": e.contents} for e in world.entities])
        if all(hop_rank(world, index, i, rel) < topk for i, rel in zip(chain.entities, chain.path)):
            if is_acceptable(world, chain, "heldout", question_text(world, chain.start, chain.path)):
                return world, chain
    return None


def _add_lookalikes(
    base: World, types: list[str], names: list[str], facts: list[dict[str, int | str]], chain: Chain, d: int,
    doc_noise: float, rng: np.random.Generator,
) -> World:
    if d == 0:
        return base
    types, names, facts = list(types), list(names), [dict(f) for f in facts]
    looks = [0] * len(names)
    taken = set(names)
    for idx in dict.fromkeys(chain.entities):
        made = 0
        for _ in range(50 * d):
            if made == d:
                break
            words = names[idx].split()
            pos = 0 if types[idx] in (ORG, WORK) else len(words) - 1  # vary the name, not "Systems"/"Saga"
            stem = words[pos][: max(2, len(words[pos]) - 3)]
            words[pos] = (stem + random_syllable(rng)).capitalize()
            cand = " ".join(words)
            if cand in taken or cand.lower().startswith("the "):
                continue
            taken.add(cand)
            types.append(types[idx])
            names.append(cand)
            facts.append(_copy_shape(facts[idx], types, rng))
            looks.append(d)
            made += 1
        looks[idx] = made
    return assemble_world(base.seed, types, names, looks, facts, doc_noise, rng)


def _copy_shape(own: dict, types: list[str], rng: np.random.Generator) -> dict[str, int | str]:
    """Facts for a look-alike: same relations, other objects (drawn from the world)."""
    out: dict[str, int | str] = {}
    for rel, obj in sorted(own.items()):
        if RELATIONS[rel].object == YEAR:
            out[rel] = str(int(rng.integers(1700, 2000)))
        else:
            pool = [i for i, t in enumerate(types) if t == RELATIONS[rel].object and i != obj]
            out[rel] = int(pool[rng.integers(len(pool))]) if pool else obj
    return out


def _sample_episode(rng: np.random.Generator, split: str, hops: tuple[int, int], distractors: int, doc_noise: float, topk: int) -> Task:
    for _ in range(MAX_TRIES):
        world_seed = int(rng.integers(1 << 31))
        if split_of_key(f"episode-{world_seed}") != split:
            continue
        h = int(rng.integers(hops[0], hops[1] + 1))
        task = _episode_task(split, world_seed, h, distractors, doc_noise, topk)
        if task is not None:
            return task
    raise RuntimeError(f"no solvable episode world for split={split} after {MAX_TRIES} tries")


def _episode_task(split: str, world_seed: int, h: int, d: int, doc_noise: float, topk: int) -> Task | None:
    built = episode_world(world_seed, h, d, doc_noise, topk)
    if built is None:
        return None
    world, chain = built
    if has_reserved(chain.path) and split != "heldout":
        return None
    key = f"episode-{world_seed}-h{h}-d{d}-n{doc_noise:g}-k{topk}"
    return _build_task(world, chain, split, key, h, "episode")


def generate_task(
    rng: np.random.Generator,
    split: str = "train",
    hops: tuple[int, int] = (1, 3),
    distractors: int = 2,
    corpus: str = "shared",
    doc_noise: float = 0.3,
    topk: int = 3,
) -> Task:
    """A solvable task of `split` drawn from `rng` (pure: same generator state, same task)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not (1 <= hops[0] <= hops[1] <= 4):
        raise ValueError(f"hops must be a range within 1..4, got {hops}")
    if not 0 <= distractors <= 5:
        raise ValueError(f"distractors must lie in 0..5, got {distractors}")
    if corpus == "shared":
        return _sample_shared(rng, split, hops, distractors, topk)
    if corpus == "episode":
        return _sample_episode(rng, split, hops, distractors, doc_noise, topk)
    raise ValueError(f"corpus must be 'shared' or 'episode', got {corpus!r}")


_SHARED_KEY = re.compile(r"^search/(train|test|heldout)/shared-w(\d)-e(\d+)-([a-z_.]+)$")
_EPISODE_KEY = re.compile(r"^search/(train|test|heldout)/episode-(\d+)-h(\d)-d(\d)-n([0-9.e-]+)-k(\d+)$")


def task_from_id(task_id: str) -> Task:
    """Rebuild a task from its id, without the RNG."""
    m = _SHARED_KEY.match(task_id)
    if m:
        split, seed, start, path = m.group(1), int(m.group(2)), int(m.group(3)), tuple(m.group(4).split("."))
        world = shared_world(seed)
        if SHARED_SEEDS[split] != seed or any(p not in RELATIONS for p in path) or start >= len(world.entities):
            raise ValueError(f"task id {task_id!r} names an unknown world, entity or relation")
        chain = follow(world, start, path)
        if chain is None:
            raise ValueError(f"task id {task_id!r}: the relation path does not apply to entity {start}")
        return _build_task(world, chain, split, task_id.split("/", 2)[2], len(path), "shared")
    m = _EPISODE_KEY.match(task_id)
    if m:
        split = m.group(1)
        task = _episode_task(split, int(m.group(2)), int(m.group(3)), int(m.group(4)), float(m.group(5)), int(m.group(6)))
        if task is None or task.task_id != task_id:
            raise ValueError(f"task id {task_id!r} does not name a solvable episode world")
        return task
    raise ValueError(
        f"not a search task id: {task_id!r}; expected 'search/<split>/shared-w<seed>-e<entity>-<rel.rel>' "
        "or 'search/<split>/episode-<seed>-h<hops>-d<d>-n<noise>-k<topk>'"
    )
