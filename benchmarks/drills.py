"""Kill drills: SIGKILL a writer at random points and check that nothing it acknowledged is lost.

Store drill: a subprocess appends Episodes with `RolloutStore` and prints each episode id after
`append` returns (the acknowledgement); the parent SIGKILLs it at a random moment, K times on the same
file. Afterwards every acknowledged id must read back, `read()` must not raise (a torn line is
tolerated only because the reader skips it), and no acknowledged id may sit on a torn line.

Checkpoint drill: a subprocess saves checkpoints with `trainers.checkpoint.save_checkpoint` (write a temp
file, fsync, rename) and prints each step after the save returns; after each SIGKILL the checkpoint
file must load and hold a step no older than the last acknowledged one.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from creditgym.store import RolloutStore

__all__ = ["DrillRow", "checkpoint_kill_drill", "store_kill_drill"]

_STORE_WRITER = r"""
import sys
from creditgym import Episode, Turn
from creditgym.store import RolloutStore

path, seed = sys.argv[1], int(sys.argv[2])
store = RolloutStore(path)
print("ready", flush=True)
i = 0
while True:
    size = (i * 7919 + seed) % 50_000
    turns = tuple(Turn(obs_ids=[1, 2], action_ids=[3] * 8, action_text="<answer>é中🙂</answer>" * 4,
                       obs_text="x" * size, reward=0.5) for _ in range(3))
    ep = Episode(turns=turns, episode_id=f"s{seed}-e{i}", task_id="t", group_id=f"g{seed}", seed=i)
    store.append(ep)
    print(ep.episode_id, flush=True)
    i += 1
"""

_CHECKPOINT_WRITER = r"""
import sys
import torch
from creditgym.trainers.checkpoint import save_checkpoint

path, seed = sys.argv[1], int(sys.argv[2])
weights = torch.randn(1 << 20, generator=torch.Generator().manual_seed(seed))
print("ready", flush=True)
step = 0
while True:
    step += 1
    save_checkpoint(path, {"step": step, "seed": seed, "model": weights + step})
    print(step, flush=True)
"""


@dataclass
class DrillRow:
    """One drill: `tried` kills; `failed` kills after which an acknowledged record was lost or unreadable."""

    name: str
    tried: int = 0
    failed: int = 0
    acknowledged: int = 0
    recovered: int = 0
    torn_lines: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run_and_kill(script: str, args: list[str], delay_s: float, timeout_s: float = 120.0) -> list[str]:
    """Start `python -c script args`, wait for its "ready" line, let it run `delay_s`, SIGKILL it; return the
    complete lines it printed after "ready" (its acknowledgements). stdout is read only through its
    buffered file object (never `communicate`, whose raw reads would skip what `readline` buffered)."""
    with tempfile.TemporaryFile() as err, subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=err
    ) as proc:
        assert proc.stdout is not None
        try:
            first = proc.stdout.readline()
            if first.strip() != b"ready":
                proc.kill()
                proc.wait(timeout_s)
                err.seek(0)
                raise RuntimeError(f"drill writer failed to start: {err.read().decode(errors='replace')[-2000:]}")
            time.sleep(delay_s)
            proc.kill()
            out = proc.stdout.read()  # EOF once the killed writer's pipe closes
            proc.wait(timeout_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = out.decode("utf-8", errors="replace")
    return text.split("\n")[:-1]  # a last line without its newline was not acknowledged


def store_kill_drill(kills: int = 10, seed: int = 0, max_delay_s: float = 0.3, workdir: str | None = None) -> DrillRow:
    """SIGKILL a RolloutStore writer `kills` times on one file; see the module doc."""
    rng = random.Random(f"store/{seed}")
    row = DrillRow(name="store")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "episodes.jsonl"
        acked: set[str] = set()
        read: set[str] = set()
        for k in range(kills):
            writer = seed * 1000 + k
            lines = _run_and_kill(_STORE_WRITER, [str(path), str(writer)], rng.uniform(0.0, max_delay_s))
            row.tried += 1
            if lines != [f"s{writer}-e{i}" for i in range(len(lines))]:  # the drill itself misread the writer
                raise RuntimeError(f"kill {k}: unexpected acknowledgements from the writer: {lines[:3]} ... {lines[-3:]}")
            acked.update(lines)
            try:
                read = {ep.episode_id for ep in RolloutStore(path).read()}
            except Exception as e:  # read() must skip torn lines, never raise
                row.failed += 1
                row.failures.append(f"kill {k}: read() raised {type(e).__name__}: {e}")
                continue
            lost = acked - read
            if lost:
                row.failed += 1
                row.failures.append(f"kill {k}: {len(lost)} acknowledged episodes lost, e.g. {sorted(lost)[:3]}")
        row.acknowledged = len(acked)
        row.recovered = len(acked & read)
        row.torn_lines = _count_torn(path, acked, row)
    row.seconds = time.perf_counter() - t0
    return row


def _count_torn(path: Path, acked: set[str], row: DrillRow) -> int:
    """Lines that do not parse as JSON; one that contains an acknowledged id is a failure."""
    torn = 0
    if not path.exists():
        return 0
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        try:
            json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            torn += 1
            text = raw.decode("utf-8", errors="replace")
            hit = [i for i in acked if f'"{i}"' in text]
            if hit:
                row.failed += 1
                row.failures.append(f"acknowledged episode {hit[0]} sits on a torn line")
    return torn


def checkpoint_kill_drill(kills: int = 5, seed: int = 0, max_delay_s: float = 0.5, workdir: str | None = None) -> DrillRow:
    """SIGKILL a `save_checkpoint` loop `kills` times; the file must load with a step >= the last acknowledged."""
    import torch

    rng = random.Random(f"checkpoint/{seed}")
    row = DrillRow(name="checkpoint")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "checkpoint.pt"
        for k in range(kills):
            lines = _run_and_kill(_CHECKPOINT_WRITER, [str(path), str(seed * 1000 + k)], rng.uniform(0.0, max_delay_s))
            row.tried += 1
            if lines != [str(i) for i in range(1, len(lines) + 1)]:  # the drill itself misread the writer
                raise RuntimeError(f"kill {k}: unexpected acknowledgements from the writer: {lines[:3]} ... {lines[-3:]}")
            last = int(lines[-1]) if lines else 0
            row.acknowledged += last
            if not path.exists():
                if last:
                    row.failed += 1
                    row.failures.append(f"kill {k}: {last} saves acknowledged but no checkpoint file")
                continue
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)  # not load_checkpoint: it sets global RNGs
                mine = int(state["seed"]) == seed * 1000 + k
                ok = (mine and int(state["step"]) >= last) or (not mine and last == 0)
                ok = ok and bool(torch.isfinite(state["model"]).all())
            except Exception as e:  # a checkpoint that does not load is the failure this drill looks for
                row.failed += 1
                row.failures.append(f"kill {k}: checkpoint does not load ({type(e).__name__}: {e})")
                continue
            if not ok:
                row.failed += 1
                row.failures.append(f"kill {k}: checkpoint holds step {state['step']} of writer {state['seed']}, acknowledged {last}")
            else:
                row.recovered += 1
    row.seconds = time.perf_counter() - t0
    return row
