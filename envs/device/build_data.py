"""Freeze ~500 Device tasks per split into `envs/device/data/tasks_{split}.jsonl.gz` (ENVS.md section 0).

    python -m creditgym.envs.device.build_data          # rewrite the shipped files

Each line: `{"task_id", "difficulty", "template", "goal", "gold", "version"}`; the task id alone
rebuilds the phone (`reset(options={"task_id": ...})`), so the files are a fixed evaluation set.
A generator change bumps `GENERATOR_VERSION` and reruns this module; a test checks that
regeneration is byte-identical.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np

from creditgym.envs.base import SPLITS
from creditgym.envs.device.tasks import generate_task

__all__ = ["DATA_DIR", "GENERATOR_VERSION", "build_split", "load_frozen", "main"]

GENERATOR_VERSION = "device-1"
DATA_DIR = Path(__file__).parent / "data"
TASKS_PER_SPLIT = 501  # 167 per difficulty


def build_split(split: str, n: int = TASKS_PER_SPLIT) -> bytes:
    """The gzipped JSONL bytes of one split's frozen tasks (deterministic: gzip mtime 0)."""
    rng = np.random.default_rng(SPLITS.index(split))
    lines = []
    for i in range(n):
        task = generate_task(rng, split, difficulty=1 + i % 3)
        lines.append(json.dumps({
            "task_id": task.task_id, "difficulty": task.difficulty, "template": task.private["spec"]["template"],
            "goal": task.prompt, "gold": list(task.gold), "version": GENERATOR_VERSION,
        }, sort_keys=True, ensure_ascii=False))
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as f:
        f.write(("\n".join(lines) + "\n").encode())
    return buf.getvalue()


def load_frozen(split: str) -> list[dict]:
    """The shipped frozen tasks of a split."""
    path = DATA_DIR / f"tasks_{split}.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> None:
    DATA_DIR.mkdir(exist_ok=True)
    for split in SPLITS:
        (DATA_DIR / f"tasks_{split}.jsonl.gz").write_bytes(build_split(split))


if __name__ == "__main__":
    main()
