"""SelfSearchEnv: SSRL's self-search (arXiv 2508.10874; ENVS.md section 5).

`source="inline"`: one action is the whole trajectory; the policy writes its own `<information>`
after each `<search>`, and `info["mask_spans"]` marks those bodies so their tokens get loss mask 0.
`source="responder"`: multi-turn like Search-v0, each search answered by a callback the Collector
attaches with `set_responder(fn)` (envs never import agents); the replies are observations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from creditgym.envs.base import BackendError, Invalid, Outcome, Parsed, Task
from creditgym.envs.parsing import exact_match, f1, find_blocks
from creditgym.envs.search.env import SearchEnv, load_task_file
from creditgym.envs.selfsearch.ssrl import information_spans, ssrl_format_reward, ssrl_reward
from creditgym.envs.selfsearch.tasks import generate_selfsearch_task, selfsearch_task_from_id

__all__ = ["INLINE_PROMPT", "RESPONDER_PROMPT", "Responder", "SearchRequest", "SelfSearchEnv", "cut_docs"]

INLINE_PROMPT = (
    "Answer the question. Reason inside <think>...</think>. When you need a fact, write <search>query</search>\n"
    "and then, inside <information>...</information>, what a search engine would return, from your own\n"
    "knowledge. Repeat as needed, then give <answer>short answer</answer>.\n"
    "Question: {question}\n"
)
RESPONDER_PROMPT = (
    "Answer the question. Reason inside <think>...</think>, then end your reply with exactly one of:\n"
    "<search>query</search> to search; results come back inside <information>...</information>\n"
    "<answer>short answer</answer> to finish; give only the name or number.\n"
    "You have {max_turns} replies.\n"
    "Question: {question}\n"
)
INLINE_INVALID = (
    "\nNo <answer> block: write the whole search in one reply, for example <think>...</think>"
    "<search>query</search><information>what a search engine would return</information>"
    "<think>...</think><answer>short answer</answer>.\n"
)
# The useful-variant simulation prompt (ZeroSearch-style), without the gold answer.
SIMULATION_PROMPT = (
    "You are the search engine of a fictional world. Given a search query, write five documents of about "
    "30 words each that help answer the question, one per line, each starting with 'Doc <n>:'.\n"
    "Question: {question}\nQuery: {query}\n"
)
NO_RESPONDER_OBS = "\n\n<information>Search unavailable: no responder attached.</information>\n\n"


@dataclass(frozen=True)
class SearchRequest:
    """One search the responder must answer with one document text."""

    task_id: str
    question: str
    query: str
    call_index: int
    prompt: str


Responder = Callable[[list[SearchRequest]], list[str]]


def cut_docs(text: str, topk: int) -> str:
    """The responder's text cut before `Doc {topk+1}` (and to at most `topk` `Doc i:` lines)."""
    lines, docs = [], 0
    for line in text.strip().split("\n"):
        if line.lstrip().startswith("Doc "):
            docs += 1
            if docs > topk:
                break
        lines.append(line)
    return "\n".join(lines).strip()


class SelfSearchEnv(SearchEnv):
    """Self-search QA over the knowledge world (see docs/envs/selfsearch.md)."""

    metadata = {**SearchEnv.metadata, "obs_role": "continuation", "stop": ("</answer>",), "requires_responder": False}
    family = "selfsearch"

    def __init__(
        self,
        source: str = "inline",
        split: str = "train",
        hops: tuple[int, int] = (1, 3),
        max_turns: int | None = None,
        reward: str = "ssrl",
        topk: int = 3,
        invalid_penalty: float = 0.0,
        tasks_path: str | None = None,
        **kw: Any,
    ):
        if source not in ("inline", "responder"):
            raise ValueError(f"source must be 'inline' or 'responder', got {source!r}")
        if reward not in ("ssrl", "em", "f1"):
            raise ValueError(f"reward must be 'ssrl', 'em' or 'f1', got {reward!r}")
        turns = max_turns if max_turns is not None else (2 if source == "inline" else 6)
        super().__init__(split=split, hops=hops, topk=topk, max_turns=turns, invalid_penalty=invalid_penalty, **kw)
        self.source, self.ssrl = source, reward
        self.prompt = INLINE_PROMPT if source == "inline" else RESPONDER_PROMPT
        if source == "responder":
            self.metadata = {**type(self).metadata, "stop": ("</search>", "</answer>"), "requires_responder": True}
        self._responder: Responder | None = None
        # Real runs: questions from a jsonl with Search-R1's `question` / `golden_answers` fields.
        self._tasks_file = load_task_file(tasks_path) if tasks_path else None

    def set_responder(self, fn: Responder | None) -> None:
        """Attach the callback that answers searches: `fn(list[SearchRequest]) -> list[str]`."""
        self._responder = fn

    # ------------------------------------------------------------------ tasks
    def _new_task(self, rng: np.random.Generator, options: Mapping[str, Any]) -> Task:
        self._zero_counters()
        self._format = 0.0
        self._obs_seen: list[str] = []
        self._episode_index = None
        if self._tasks_file is not None:
            return self._file_task(rng, options)
        if "task_id" in options:
            return selfsearch_task_from_id(str(options["task_id"]))
        return generate_selfsearch_task(rng, self.split, self.hops)

    # ------------------------------------------------------------------ actions
    def _parse(self, action: str) -> Parsed | Invalid:
        if self.source == "responder":
            return super()._parse(action)
        answers = find_blocks(action, ["answer"])
        if not answers or not " ".join(answers[-1].body.split()):
            return Invalid(INLINE_INVALID)
        return Parsed("answer", {"text": " ".join(answers[-1].body.split())}, action)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        if self.source == "inline" and self._actions:
            info["mask_spans"] = [list(s) for s in information_spans(self._actions[-1])]
        else:
            self._obs_seen.append(obs)
        return obs, reward, terminated, truncated, info

    def _apply(self, parsed: Parsed) -> Outcome:
        if parsed.kind != "answer":
            return super()._apply(parsed)
        assert self.task is not None
        self._n_applied += 1
        self._answer = parsed.args["text"]
        self._em = exact_match(self._answer, self.task.gold)
        self._f1 = f1(self._answer, self.task.gold)
        text = parsed.raw
        if self.source == "responder":  # the whole multi-turn transcript, replies and observations
            text = "".join(a + o for a, o in zip(self._actions or [], self._obs_seen)) + parsed.raw
        self._format = ssrl_format_reward(text)
        if self.source == "inline":
            self._n_search = len(find_blocks(parsed.raw, ["search"]))
        base = {"ssrl": ssrl_reward(self._em, self._format), "em": self._em, "f1": self._f1}[self.ssrl]
        self._answer_reward = base
        return Outcome("", reward=base, terminated=True)

    def _search_obs(self, query: str) -> tuple[str, dict[str, Any]]:
        assert self.task is not None
        request = SearchRequest(
            task_id=self.task.task_id, question=self.task.prompt, query=query, call_index=self._n_search,
            prompt=SIMULATION_PROMPT.format(question=self.task.prompt, query=query),
        )
        responder = self._responder

        def ask() -> str:
            if responder is None:
                raise BackendError("no_responder", "attach one with env.unwrapped.set_responder(fn)")
            texts = responder([request])
            if not isinstance(texts, list) or len(texts) != 1 or not isinstance(texts[0], str):
                raise BackendError("bad_response", f"the responder must return a list of one str, got {str(texts)[:200]}")
            return cut_docs(texts[0], self.topk)

        text = self.call_backend("responder", {"query": query, "call_index": request.call_index}, ask)
        return f"\n\n<information>{text}</information>\n\n", {}

    def _backend_error_obs(self, err: BackendError) -> str:
        return NO_RESPONDER_OBS if err.kind == "no_responder" else super()._backend_error_obs(err)

    # ------------------------------------------------------------------ bookkeeping
    def _state_key(self) -> str:
        assert self.task is not None
        return f"selfsearch|{self.task.task_id}|t={self.turn}"

    def _final_components(self) -> dict[str, float]:
        return {
            "answer": self._answer_reward,
            "invalid": self.invalid_penalty * (self.turn - self._n_applied),
            "em": self._em,
            "f1": self._f1,
            "format": self._format,
            "n_search": float(self._n_search),
            "n_invalid": float(self.turn - self._n_applied),
            "success": self._em,
        }

    def _valid_actions(self) -> list[str]:
        assert self.task is not None
        if self.source == "responder":
            return super()._valid_actions()
        q = self.task.prompt
        return [
            f"<think>I need a fact.</think><search>{q}</search><information>Nothing relevant.</information>"
            "<think>I do not know.</think><answer>unknown</answer>",
            "<think>Guess.</think><answer>unknown</answer>",
            f"<think>Search first.</think><search>{q}</search><information>No results.</information>",
        ]

    def _fuzz_actions(self) -> list[str]:
        return [
            *super()._fuzz_actions(),
            "<information>unclosed",
            "<think></think><answer></answer>",
            "<answer>x</answer><answer>",
            "<information><answer>x</answer></information>",
        ]
