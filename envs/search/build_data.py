"""Regenerate the shipped search data: `python -m creditgym.envs.search.build_data`.

Writes `data/worlds.jsonl.gz` (the three shared worlds, one entity per line) and
`data/tasks.jsonl.gz` (500 frozen default-knob tasks per split, Search-R1's `question` /
`golden_answers` fields), both tagged with GENERATOR_VERSION and byte-reproducible (gzip mtime 0).
A generator change bumps GENERATOR_VERSION and reruns this module.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from creditgym.envs.base import Task
from creditgym.envs.search.tasks import GENERATOR_VERSION, SHARED_SEEDS, generate_task
from creditgym.envs.search.world import shared_world

__all__ = ["DATA_DIR", "frozen_tasks", "gzip_jsonl", "load_jsonl_gz", "question_rows", "task_rows", "world_rows", "write_all"]

DATA_DIR = Path(__file__).parent / "data"
TASKS_PER_SPLIT = 500


def gzip_jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    """Rows as gzip-compressed JSON lines, byte-identical across runs (mtime 0, no file name)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as fh:
        for row in rows:
            fh.write((json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n").encode())
    return buf.getvalue()


def load_jsonl_gz(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def frozen_tasks(split: str) -> list[dict[str, Any]]:
    """The shipped frozen tasks of a split (`task_id`, `question`, `golden_answers`, `hops`); pass a
    `task_id` to `reset(options={"task_id": ...})` to play one."""
    return [r for r in load_jsonl_gz(DATA_DIR / "tasks.jsonl.gz") if r["split"] == split]


def world_rows() -> list[dict[str, Any]]:
    rows = []
    for split, seed in SHARED_SEEDS.items():
        world = shared_world(seed)
        for e in world.entities:
            rows.append({
                "generator_version": GENERATOR_VERSION, "split": split, "world_seed": seed, "id": world.doc_id(e.idx),
                "type": e.type, "name": e.name, "aliases": list(e.aliases), "lookalikes": e.lookalikes,
                "facts": {k: world.object_name(v) for k, v in sorted(e.facts.items())}, "contents": e.contents,
            })
    return rows


def question_rows(
    generate: Callable[[np.random.Generator, str], Task], splits: Iterable[str], n: int, stream: int = 0
) -> list[dict[str, Any]]:
    """`n` frozen tasks per split in Search-R1's `question` / `golden_answers` fields; split i draws
    from `default_rng([GENERATOR_VERSION, stream + i])` (the search family uses stream 0, self-search 100)."""
    rows = []
    for i, split in enumerate(splits):
        rng = np.random.default_rng([GENERATOR_VERSION, stream + i])
        for _ in range(n):
            t = generate(rng, split)
            rows.append({
                "generator_version": GENERATOR_VERSION, "split": split, "task_id": t.task_id,
                "question": t.prompt, "golden_answers": list(t.gold), "hops": t.difficulty,
            })
    return rows


def task_rows(n: int = TASKS_PER_SPLIT) -> list[dict[str, Any]]:
    return question_rows(generate_task, SHARED_SEEDS, n)


def write_all(out_dir: Path = DATA_DIR) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, rows in (("worlds.jsonl.gz", world_rows()), ("tasks.jsonl.gz", task_rows())):
        data = gzip_jsonl(rows)
        (out_dir / name).write_bytes(data)
        sizes[name] = len(data)
    return sizes


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO)
    logging.getLogger(__name__).info("wrote %s", write_all())
