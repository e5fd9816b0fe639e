"""Freeze ~500 tasks per split into `envs/tools/data/tasks_<split>.jsonl.gz` (ENVS.md section 0).

    python -m creditgym.envs.tools.build_data

A Tools task is fully determined by its `task_id` (the generator rebuilds files, store and text
from the key), so each row keeps the id, difficulty, gold and a digest of the prompt and files:
`test_data_matches_generator` regenerates the files and checks they are byte-identical.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os

import numpy as np

from creditgym.envs.tools.tasks import GENERATOR_VERSION, TASK_TYPES, generate_task

__all__ = ["DATA_DIR", "N_PER_SPLIT", "build_split", "main"]

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
N_PER_SPLIT = 500
_SPLIT_SEEDS = {"train": 0, "test": 1, "heldout": 2}


def build_split(split: str, n: int = N_PER_SPLIT) -> bytes:
    """The gzip bytes of one split's frozen tasks (deterministic: fixed seed, gzip mtime 0)."""
    rng = np.random.default_rng(_SPLIT_SEEDS[split])
    lines = []
    for i in range(n):
        task = generate_task(rng, split, TASK_TYPES, difficulty=1 + i % 3)
        digest = hashlib.sha1(json.dumps([task.prompt, task.private["files"], task.private["kv"]],
                                         sort_keys=True).encode()).hexdigest()
        lines.append(json.dumps({"task_id": task.task_id, "difficulty": task.difficulty, "gold": list(task.gold),
                                 "check": task.private["check"], "sha1": digest,
                                 "generator_version": GENERATOR_VERSION}, sort_keys=True))
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as f:
        f.write(("\n".join(lines) + "\n").encode())
    return buf.getvalue()


def main() -> None:
    os.makedirs(DATA_DIR, exist_ok=True)
    for split in _SPLIT_SEEDS:
        with open(os.path.join(DATA_DIR, f"tasks_{split}.jsonl.gz"), "wb") as f:
            f.write(build_split(split))


if __name__ == "__main__":
    main()
