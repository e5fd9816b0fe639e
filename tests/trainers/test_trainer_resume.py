"""A resume cuts metrics.jsonl and episodes.jsonl back to the checkpoint (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _trainer_helpers import build_tiny, register_letter_env

from creditgym.store import RolloutStore


@pytest.fixture(scope="module", autouse=True)
def letter_env() -> None:
    register_letter_env()


def _trainer(cache: Path, out: Path, steps: int) -> Any:
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig(steps=steps, num_groups=2, group_size=2, max_new_tokens=5, lr=1e-3, out_dir=str(out),
                     checkpoint_every=2, resume=True, tensorboard=False, seed=1)  # fmt: skip
    return GRPOTrainer(build_tiny(cache), "TrainerTestLetter-v0", cfg)


def _metric_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_resume_truncates_metrics_and_episodes_to_the_checkpoint(tiny_cache: Path, tmp_path: Path) -> None:
    first = _trainer(tiny_cache, tmp_path, steps=3)
    first.train()  # checkpoint after step 2; step 3 is logged and stored, then the process "dies"
    first_eps = RolloutStore(tmp_path / "episodes.jsonl").read()
    assert _metric_steps(tmp_path) == [1, 2, 3] and len(first_eps) == 12
    with open(tmp_path / "episodes.jsonl", "ab") as f:
        f.write(b'{"torn": ')  # a record torn by the kill

    second = _trainer(tiny_cache, tmp_path, steps=4)
    assert second.step_idx == 2
    assert _metric_steps(tmp_path) == [1, 2]  # cut on load
    assert len(RolloutStore(tmp_path / "episodes.jsonl").read()) == 8
    second.train()

    assert _metric_steps(tmp_path) == [1, 2, 3, 4]  # each step exactly once
    eps = RolloutStore(tmp_path / "episodes.jsonl").read()
    assert len(eps) == 16  # 4 kept steps x 2 groups x 2 episodes, nothing of the discarded step 3
    kept_ids = {e.episode_id for e in first_eps[:8]}
    assert [e.episode_id for e in eps[:8]] == [e.episode_id for e in first_eps[:8]]
    assert not {e.episode_id for e in first_eps[8:]} & {e.episode_id for e in eps}
    assert not kept_ids & {e.episode_id for e in eps[8:]}
