"""Regenerate the shipped self-search data: `python -m creditgym.envs.selfsearch.build_data`.

Writes `data/tasks.jsonl.gz`: 500 frozen questions per split about the knowledge world (the search
family's train world, shipped in `creditgym/envs/search/data/worlds.jsonl.gz`), tagged with
GENERATOR_VERSION and byte-reproducible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from creditgym.envs.base import SPLITS
from creditgym.envs.search.build_data import gzip_jsonl, question_rows
from creditgym.envs.selfsearch.tasks import generate_selfsearch_task

__all__ = ["DATA_DIR", "task_rows", "write_all"]

DATA_DIR = Path(__file__).parent / "data"
TASKS_PER_SPLIT = 500


def task_rows(n: int = TASKS_PER_SPLIT) -> list[dict[str, Any]]:
    return question_rows(generate_selfsearch_task, SPLITS, n, stream=100)


def write_all(out_dir: Path = DATA_DIR) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = gzip_jsonl(task_rows())
    (out_dir / "tasks.jsonl.gz").write_bytes(data)
    return {"tasks.jsonl.gz": len(data)}


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO)
    logging.getLogger(__name__).info("wrote %s", write_all())
