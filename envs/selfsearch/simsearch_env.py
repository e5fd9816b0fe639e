"""SimSearchEnv: a simulator plays the search engine (ZeroSearch, arXiv 2505.04588; ENVS.md section 5).

Each search returns noisy documents with probability p, else useful ones (a Bernoulli draw from
`np_random`). p follows ZeroSearch's curriculum (`llm_agent/generation.py::dynamic_threshold`),
frozen at reset from `training_step`. Sources: `template` (offline: BM25 top-k over the search world
as useful documents, templated wrong facts as noisy ones), `llm` (any OpenAI-compatible chat
endpoint with a simulation prompt) and `retriever` (sim-to-real: the same tasks, a real retriever).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from creditgym.envs.base import BackendError, Task
from creditgym.envs.http_client import JsonClient, preview
from creditgym.envs.search.env import SearchEnv, contains_answer
from creditgym.envs.search.retrievers import doc_as_text, format_search_r1, format_zerosearch, tokenize
from creditgym.envs.search.world import FILLERS, RELATIONS, YEAR, World

__all__ = ["SIM_PROMPT_NOISY", "SIM_PROMPT_USEFUL", "SimSearchEnv", "noise_schedule", "noisy_documents", "parse_llm_documents"]

SIM_PROMPT_USEFUL = (
    "You are the search engine of a fictional world. Write five documents of about 30 words each for the "
    "search query below. They must be useful: together they should let a reader answer the question, and "
    "one of them should state the answer.\nQuestion: {question}\nAnswer: {answer}\nQuery: {query}\n"
    "Reply with one document per line, each starting with 'Doc <n>:'."
)
SIM_PROMPT_NOISY = (
    "You are the search engine of a fictional world. Write five documents of about 30 words each for the "
    "search query below. They must look related to the query but be noisy: wrong or irrelevant facts, and "
    "they must not contain the answer.\nQuestion: {question}\nAnswer to avoid: {answer}\nQuery: {query}\n"
    "Reply with one document per line, each starting with 'Doc <n>:'."
)
_DOC_LINE = re.compile(r"^\s*Doc\s*(\d+)\s*:\s*(.*)$")


def noise_schedule(step: int, p_start: float, p_end: float, base: float = 4.0, total_steps: int = 200) -> float:
    """ZeroSearch's curriculum: p(i) = p_s + (b^{i/T} - 1) / (b - 1) * (p_e - p_s), i/T clipped to [0, 1]."""
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    if base == 1.0:
        return p_start + frac * (p_end - p_start)
    return p_start + (base**frac - 1) / (base - 1) * (p_end - p_start)


def parse_llm_documents(content: str, topk: int) -> list[str]:
    """Texts of the `Doc n:` lines of a simulator reply, cut before `Doc {topk+1}` as ZeroSearch does."""
    out: list[str] = []
    for line in content.split("\n"):
        m = _DOC_LINE.match(line)
        if m is None:
            continue
        if int(m.group(1)) > topk or len(out) >= topk:
            break
        if m.group(2).strip():
            out.append(m.group(2).strip())
    return out


def _query_subjects(world: World, query: str) -> list[int]:
    """Entities whose full name occurs in the query (longest first)."""
    q = " " + " ".join(tokenize(query)) + " "
    hits = [e.idx for e in world.entities if " " + " ".join(tokenize(e.name)) + " " in q]
    return sorted(hits, key=lambda i: (-len(world.entities[i].name), i))


def noisy_documents(world: World, query: str, gold: tuple[str, ...], k: int, rng: np.random.Generator) -> list[dict[str, str]]:
    """k templated documents naming the query's entities but stating a look-alike's fact or another
    same-type object; no document contains the gold answer. Each is `{"id", "contents"}`."""
    subjects = [i for i in _query_subjects(world, query) if not contains_answer(world.entities[i].name, gold)]
    if not subjects:
        subjects = [int(i) for i in rng.choice(len(world.entities), size=min(3, len(world.entities)), replace=False)]
    qtoks = set(tokenize(query))
    docs: list[dict[str, str]] = []
    used: set[str] = set()
    for j in range(50 * k):
        if len(docs) == k:
            break
        e = world.entities[subjects[j % len(subjects)]]
        if contains_answer(e.name, gold) or not e.facts:
            continue
        rels = sorted(e.facts)
        keyed = [r for r in rels if RELATIONS[r].keyword in qtoks]
        rel = RELATIONS[keyed[0] if keyed else rels[int(rng.integers(len(rels)))]]
        true = e.facts[rel.name]
        if rel.object == YEAR:
            wrong = str(int(rng.integers(1700, 2000)))
        else:
            pool = [x.idx for x in world.entities if x.type == rel.object and x.idx != true]
            wrong = world.entities[int(pool[rng.integers(len(pool))])].name if pool else ""
        if not wrong or wrong == world.object_name(true) or wrong in used:
            continue
        sentence = rel.templates[int(rng.integers(len(rel.templates)))].format(s=e.name, o=wrong)
        text = f"{sentence}. {FILLERS[int(rng.integers(len(FILLERS)))]}."
        if contains_answer(text, gold):
            continue
        used.add(wrong)
        contents = f'"{e.name}"\n{text}'
        docs.append({"id": "noisy-" + hashlib.sha1(contents.encode()).hexdigest()[:10], "contents": contents})
    return docs


class SimSearchEnv(SearchEnv):
    """Search QA against a simulated search engine with curriculum noise (see docs/envs/selfsearch.md)."""

    metadata = {**SearchEnv.metadata, "obs_role": "continuation", "stop": ("</search>", "</answer>")}

    def __init__(
        self,
        source: str = "template",
        split: str = "train",
        hops: tuple[int, int] = (1, 3),
        topk: int = 5,
        max_turns: int = 6,
        noise: tuple[float, float] = (0.0, 0.5),
        noise_base: float = 4.0,
        total_steps: int = 200,
        reward: str = "f1",
        doc_format: str = "zerosearch",
        llm_url: str | None = None,
        llm_model: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.0,
        retriever: str = "bm25",
        retriever_url: str | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        **kw: Any,
    ):
        if source not in ("template", "llm", "retriever"):
            raise ValueError(f"source must be 'template', 'llm' or 'retriever', got {source!r}")
        if doc_format not in ("zerosearch", "search_r1"):
            raise ValueError(f"doc_format must be 'zerosearch' or 'search_r1', got {doc_format!r}")
        if doc_format == "search_r1" and source == "llm":
            raise ValueError("doc_format='search_r1' needs titled documents: use it with source='template' or 'retriever'")
        super().__init__(
            split=split, hops=hops, topk=topk, max_turns=max_turns, reward=reward,
            retriever=retriever if source == "retriever" else "bm25", retriever_url=retriever_url,
            timeout_s=timeout_s, max_retries=max_retries, backoff_base_s=backoff_base_s, **kw,
        )
        self.task_topk = 3  # Search-v0's default: the same seeds give the same tasks as Search-v0
        self.source, self.doc_format = source, doc_format
        self.noise = (float(noise[0]), float(noise[1]))
        self.noise_base, self.total_steps = float(noise_base), int(total_steps)
        self.training_step = 0
        self.llm_model, self.temperature = llm_model, float(temperature)
        self._llm: JsonClient | None = None
        if source == "llm":
            if not llm_url or not llm_model:
                raise ValueError("source='llm' needs llm_url (e.g. 'http://127.0.0.1:8001/v1') and llm_model")
            headers = {"Content-Type": "application/json"}
            if api_key:
                headers["Authorization"] = f"Bearer {api_key}"
            self._llm = JsonClient(llm_url, timeout_s=timeout_s, max_retries=max_retries, backoff_base_s=backoff_base_s, headers=headers)
        self._noise_prob = 0.0

    def _new_task(self, rng: np.random.Generator, options: Mapping[str, Any]) -> Task:
        task = super()._new_task(rng, options)
        if "noise_prob" in options:
            self._noise_prob = float(options["noise_prob"])
        else:
            self._noise_prob = noise_schedule(self.training_step, *self.noise, self.noise_base, self.total_steps)
            if isinstance(options, dict):  # TextEnv.reset's own copy: get_state() then replays this p anywhere
                options["noise_prob"] = self._noise_prob
        self._n_noisy = 0
        self._info_text: list[str] = []
        return task

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        obs, info = super().reset(seed=seed, options=options)
        info["noise_prob"] = self._noise_prob
        return obs, info

    def _render(self, docs: list[dict[str, Any]]) -> str:
        if self.doc_format == "search_r1":
            return format_search_r1(docs)
        return format_zerosearch([doc_as_text(d) for d in docs])

    def _search_obs(self, query: str) -> tuple[str, dict[str, Any]]:
        assert self.task is not None
        if self.source == "retriever":
            obs, info = self._render(self._retrieve(query)), {}
        else:
            noisy = bool(self.np_random.random() < self._noise_prob)
            self._n_noisy += int(noisy)
            if self.source == "llm":
                obs = format_zerosearch(self._ask_llm(query, noisy))
            else:
                docs = self._template_docs(query, noisy)
                self._seen_ids.update(d["id"] for d in docs)
                obs = self._render(docs)
            info = {"noisy": noisy}
        self._info_text.append(obs)
        return obs, info

    def _template_docs(self, query: str, noisy: bool) -> list[dict[str, Any]]:
        assert self.task is not None
        world: World = self.task.private["world"]
        if noisy:
            return noisy_documents(world, query, self.task.gold, self.topk, self.np_random)
        return self._retrieve(query)

    def _ask_llm(self, query: str, noisy: bool) -> list[str]:
        assert self.task is not None and self._llm is not None
        template = SIM_PROMPT_NOISY if noisy else SIM_PROMPT_USEFUL
        prompt = template.format(question=self.task.prompt, answer=self.task.gold[0] if self.task.gold else "", query=query)
        body = {
            "model": self.llm_model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": 600,
        }
        llm, topk = self._llm, self.topk

        def call() -> list[str]:
            data = llm.post("/chat/completions", body, required=("choices",))
            try:
                content = data["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                raise BackendError("bad_response", f"no choices[0].message.content in {preview(data)}") from None
            if not isinstance(content, str):
                raise BackendError("bad_response", f"message content is not a string: {preview(content)}")
            return parse_llm_documents(content, topk)

        return self.call_backend("llm", body, call)

    def _state_key(self) -> str:
        assert self.task is not None
        info = hashlib.sha1("".join(getattr(self, "_info_text", [])).encode()).hexdigest()[:12]
        return f"simsearch|{self.task.task_id}|t={self.turn}|info={info}"

    def _final_components(self) -> dict[str, float]:
        comps = super()._final_components()
        comps.update(noise_prob=self._noise_prob, n_noisy=float(self._n_noisy))
        return comps

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
        super().close()
