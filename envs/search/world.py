"""The offline knowledge world of the search families: fictional entities, relations and documents.

ENVS.md section 2: entities with seeded syllable names (Person, City, Country, Organization, Work;
years are plain values), functional relations with >= 3 sentence templates and one noun phrase
each, one document per entity in the wiki-18 layout Search-R1 uses (`"\"{Title}\"\n{text}"`), facts
in seeded paraphrases, filler sentences and look-alike entities (one syllable apart, other facts).

The template tables here are public: the scripted expert inverts the question grammar and reads
facts with the sentence patterns, exactly as a reader of the docs could.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FILLERS",
    "NOUN_PHRASES",
    "QUESTIONS",
    "RELATIONS",
    "Entity",
    "Relation",
    "World",
    "build_world",
    "fact_patterns",
    "shared_world",
]

PERSON, CITY, COUNTRY, ORG, WORK, YEAR = "Person", "City", "Country", "Organization", "Work", "Year"
ENTITY_TYPES = (PERSON, CITY, COUNTRY, ORG, WORK)


@dataclass(frozen=True)
class Relation:
    """A functional relation: subject type, object type, the query keyword, sentence templates
    (`{s}` subject, `{o}` object; each one sentence without the final period)."""

    name: str
    subject: str
    object: str
    keyword: str
    templates: tuple[str, ...]


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in (
        Relation("born_in", PERSON, CITY, "born", ("{s} was born in {o}", "{s} was born and raised in {o}", "The birthplace of {s} is {o}")),
        Relation("works_for", PERSON, ORG, "works", ("{s} works for {o}", "{s} works at {o} as a researcher", "{s} is employed by {o}")),
        Relation("spouse", PERSON, PERSON, "married", ("{s} is married to {o}", "{s} married {o}", "The spouse of {s} is {o}")),
        Relation("founded_by", ORG, PERSON, "founder", ("{s} was founded by {o}", "The founder of {s} is {o}", "{o} is the founder of {s}")),
        Relation(
            "headquartered_in", ORG, CITY, "headquarters",
            ("{s} is headquartered in {o}", "The headquarters of {s} are in {o}", "{s} has its headquarters in {o}"),
        ),
        Relation(
            "founded_year", ORG, YEAR, "founded",
            ("{s} was founded in {o}", "{s} has existed since it was founded in {o}", "The founding year of {s} is {o}"),
        ),
        Relation("located_in", CITY, COUNTRY, "country", ("{s} is located in {o}", "{s} is a city in {o}", "{s} lies in the country of {o}")),
        Relation("capital", COUNTRY, CITY, "capital", ("The capital of {s} is {o}", "{o} is the capital of {s}", "{s} has {o} as its capital")),
        Relation("mayor", CITY, PERSON, "mayor", ("The mayor of {s} is {o}", "{o} serves as the mayor of {s}", "{s} is governed by mayor {o}")),
        Relation("author", WORK, PERSON, "author", ("{s} was written by {o}", "The author of {s} is {o}", "{o} is the author of {s}")),
        Relation(
            "published_year", WORK, YEAR, "published",
            ("{s} was published in {o}", "{s} first appeared in print in {o}", "The publication year of {s} is {o}"),
        ),
    )
}

# Question asked about the last relation of a chain, and the noun phrase of every inner relation.
QUESTIONS: dict[str, str] = {
    "born_in": "Where was {x} born?",
    "works_for": "Which organization does {x} work for?",
    "spouse": "Who is the spouse of {x}?",
    "founded_by": "Who founded {x}?",
    "headquartered_in": "In which city is {x} headquartered?",
    "founded_year": "In which year was {x} founded?",
    "located_in": "In which country is {x} located?",
    "capital": "What is the capital of {x}?",
    "mayor": "Who is the mayor of {x}?",
    "author": "Who wrote {x}?",
    "published_year": "In which year was {x} published?",
}
NOUN_PHRASES: dict[str, str] = {
    "born_in": "the birthplace of {x}",
    "works_for": "the employer of {x}",
    "spouse": "the spouse of {x}",
    "founded_by": "the founder of {x}",
    "headquartered_in": "the headquarters city of {x}",
    "located_in": "the country of {x}",
    "capital": "the capital of {x}",
    "mayor": "the mayor of {x}",
    "author": "the author of {x}",
}
INTROS: dict[str, str] = {
    PERSON: "{s} is a person of some renown",
    CITY: "{s} is a city",
    COUNTRY: "{s} is a country",
    ORG: "{s} is an organization",
    WORK: "{s} is a written work",
}
FILLERS: tuple[str, ...] = (
    "Little else is recorded about its early history",
    "Several local archives keep notes on this subject",
    "Accounts from that period are sparse and sometimes contradictory",
    "It is mentioned in a number of regional almanacs",
    "Visitors often remark on the long winters there",
    "Scholars still debate some minor details",
)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "th", "gr")
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "th", "m")
_ORG_SUFFIX = ("Systems", "Holdings", "Institute", "Works", "Group", "Labs", "Foundry", "Guild")
_WORK_NOUN = ("Chronicle", "Saga", "Codex", "Ballad", "Atlas", "Requiem", "Almanac", "Elegy")
# Entities per type in a world of n, and look-alike group sizes (1 = none) with their weights.
_TYPE_SHARE = ((PERSON, 0.40), (CITY, 0.20), (COUNTRY, 0.08), (ORG, 0.17), (WORK, 0.15))
_GROUP_SIZES = (1, 2, 3, 4, 5, 6)
_GROUP_WEIGHTS = (0.2, 0.12, 0.12, 0.12, 0.12, 0.32)


@dataclass(frozen=True)
class Entity:
    """One entity: `facts` maps relation name -> object (entity index as int, or a year as str)."""

    idx: int
    type: str
    name: str
    aliases: tuple[str, ...]
    facts: Mapping[str, int | str]
    lookalikes: int
    contents: str


@dataclass(frozen=True)
class World:
    seed: int
    entities: tuple[Entity, ...]
    by_name: Mapping[str, int] = field(default_factory=dict)

    def doc_id(self, idx: int) -> str:
        return f"w{self.seed}-{idx}"

    def object_name(self, obj: int | str) -> str:
        return obj if isinstance(obj, str) else self.entities[obj].name

    def gold(self, obj: int | str) -> tuple[str, ...]:
        if isinstance(obj, str):
            return (obj,)
        e = self.entities[obj]
        return (e.name, *e.aliases)


def random_syllable(rng: np.random.Generator) -> str:
    return str(_ONSETS[rng.integers(len(_ONSETS))] + _NUCLEI[rng.integers(len(_NUCLEI))] + _CODAS[rng.integers(len(_CODAS))])


def _word(sylls: list[str]) -> str:
    return "".join(sylls).capitalize()


def _name_parts(kind: str, rng: np.random.Generator) -> list[list[str]]:
    """Syllables per word of a fresh name (the last word is the one look-alikes vary)."""
    if kind == PERSON:
        return [[random_syllable(rng), random_syllable(rng)], [random_syllable(rng), random_syllable(rng)]]
    return [[random_syllable(rng), random_syllable(rng), random_syllable(rng)]]


def _render_name(kind: str, words: list[list[str]], extra: str) -> str:
    base = " ".join(_word(w) for w in words)
    if kind == COUNTRY:
        return base[:-1] + "ia" if base[-1] in "aeiou" else base + "ia"
    if kind in (ORG, WORK):
        return f"{base} {extra}"
    return base


def _aliases(kind: str, name: str) -> tuple[str, ...]:
    parts = name.split()
    if kind == PERSON:
        return (parts[-1],)
    if kind == ORG:
        return (parts[0],)
    if kind == CITY:
        return (f"{name} City",)
    if kind == COUNTRY:
        return (f"Republic of {name}",)
    return ()


def make_names(n: int, rng: np.random.Generator) -> list[tuple[str, str, int, int]]:
    """(type, name, group id, group size) for n entities; group members are one syllable apart."""
    counts = {t: round(share * n) for t, share in _TYPE_SHARE}
    counts[PERSON] += n - sum(counts.values())
    taken: set[str] = set()
    out: list[tuple[str, str, int, int]] = []
    group = 0
    for kind, count in counts.items():
        made = 0
        while made < count:
            size = min(int(rng.choice(_GROUP_SIZES, p=_GROUP_WEIGHTS)), count - made)
            words = _name_parts(kind, rng)
            extra = (_ORG_SUFFIX if kind == ORG else _WORK_NOUN)[rng.integers(8)] if kind in (ORG, WORK) else ""
            pos = int(rng.integers(len(words[-1])))
            names: list[str] = []
            for _ in range(50 * size):
                if len(names) == size:
                    break
                if names:
                    words[-1][pos] = random_syllable(rng)
                name = _render_name(kind, words, extra)
                if name not in taken and not name.lower().startswith("the "):
                    taken.add(name)
                    names.append(name)
            out.extend((kind, nm, group, len(names)) for nm in names)
            made += len(names)
            group += 1
    return out


def assign_facts(types: list[str], rng: np.random.Generator) -> list[dict[str, int | str]]:
    by_type: dict[str, list[int]] = {t: [i for i, k in enumerate(types) if k == t] for t in ENTITY_TYPES}
    facts: list[dict[str, int | str]] = [{} for _ in types]
    for i, kind in enumerate(types):
        for rel in RELATIONS.values():
            if rel.subject != kind or rel.name in ("spouse", "capital"):
                continue
            if rel.object == YEAR:
                facts[i][rel.name] = str(int(rng.integers(1700, 2000)))
            elif by_type[rel.object]:
                facts[i][rel.name] = int(rng.choice(by_type[rel.object]))
    people = [int(p) for p in rng.permutation(by_type[PERSON])]
    for a, b in zip(people[0::2], people[1::2]):
        facts[a]["spouse"], facts[b]["spouse"] = b, a
    for c in by_type[COUNTRY]:
        own = [x for x in by_type[CITY] if facts[x].get("located_in") == c]
        pool = own or by_type[CITY]
        if pool:
            facts[c]["capital"] = int(rng.choice(pool))
    return facts


def _render_doc(name: str, kind: str, facts: Mapping[str, int | str], names: list[str], doc_noise: float, rng: np.random.Generator) -> str:
    sentences = [INTROS[kind].format(s=name)]
    for rel_name in sorted(facts):
        rel = RELATIONS[rel_name]
        obj = facts[rel_name]
        obj_name = obj if isinstance(obj, str) else names[obj]
        template = rel.templates[rng.integers(len(rel.templates))]
        sentences.append(template.format(s=name, o=obj_name))
        if rng.random() < doc_noise:
            sentences.append(FILLERS[rng.integers(len(FILLERS))])
    return f'"{name}"\n' + " ".join(s + "." for s in sentences)


def build_world(seed: int, n_entities: int = 600, doc_noise: float = 0.3) -> World:
    """A world of `n_entities` entities drawn from `np.random.default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    rows = make_names(n_entities, rng)
    types = [r[0] for r in rows]
    names = [r[1] for r in rows]
    facts = assign_facts(types, rng)
    return assemble_world(seed, types, names, [r[3] - 1 for r in rows], facts, doc_noise, rng)


def assemble_world(
    seed: int,
    types: list[str],
    names: list[str],
    lookalikes: list[int],
    facts: list[dict[str, int | str]],
    doc_noise: float,
    rng: np.random.Generator,
) -> World:
    """Render documents and build the World (also used by episode worlds after adding look-alikes)."""
    entities = tuple(
        Entity(i, types[i], names[i], _aliases(types[i], names[i]), dict(facts[i]), lookalikes[i],
               _render_doc(names[i], types[i], facts[i], names, doc_noise, rng))
        for i in range(len(names))
    )
    return World(seed, entities, {e.name: e.idx for e in entities})


@functools.lru_cache(maxsize=8)
def shared_world(seed: int) -> World:
    """The shipped shared world of a split (seeds 0/1/2 = train/test/heldout), cached per process."""
    return build_world(seed)


@functools.lru_cache(maxsize=4096)
def fact_patterns(relation: str, subject: str) -> tuple[re.Pattern[str], ...]:
    """Regexes that read the object of `relation` about `subject` from one sentence (no period)."""
    out = []
    for t in RELATIONS[relation].templates:
        parts = [re.escape(p) for p in t.split("{o}")]
        body = parts[0] + r"(?P<o>.+?)" + parts[1]
        out.append(re.compile("^" + body.replace(re.escape("{s}"), re.escape(subject)) + "$"))
    return tuple(out)
