"""Bounded-staleness async collection (issue 23 item 4): max_staleness=0 is the synchronous loop, 1
overlaps the next collection with the update, records versions, turns TIS on and resumes exactly."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from _trainer_helpers import build_tiny, params_vector, register_letter_env

from creditgym.store import RolloutStore

STEPS = 4


@pytest.fixture(scope="module", autouse=True)
def letter_env() -> None:
    register_letter_env()


def _cfg(**kw: Any) -> Any:
    from creditgym.trainers.grpo import GRPOConfig

    base: dict[str, Any] = dict(steps=STEPS, num_groups=2, group_size=3, max_new_tokens=5, lr=1e-3, tensorboard=False,
                                seed=2)  # fmt: skip
    base.update(kw)
    return GRPOConfig(**base)


def _trainer(cache: Path, **kw: Any) -> Any:
    from creditgym.trainers.grpo import GRPOTrainer

    return GRPOTrainer(build_tiny(cache), "TrainerTestLetter-v0", _cfg(**kw))


def _untimed(m: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in m.items() if not k.startswith(("time/", "async/collect_s", "async/hidden_frac"))}


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("creditgym-collect")]


def test_staleness_zero_is_the_synchronous_loop(tiny_cache: Path) -> None:
    """max_staleness=0 runs no worker and gives exactly what the synchronous loop gives: each step
    `collect_rounds` then `train_on` on the same thread (the loop before async collection existed)."""
    run = _trainer(tiny_cache, max_staleness=0)
    assert run.pipeline is None and run.config.tis_cap is None
    run.train()
    assert not _workers()

    manual = _trainer(tiny_cache, max_staleness=0)
    history = []
    for t in range(STEPS):
        episodes, played, metrics = manual.collect_rounds()
        history.append(manual.train_on(episodes, played, metrics))
        manual.step_idx = t + 1
    assert torch.equal(params_vector(run.model), params_vector(manual.model))
    assert [_untimed(h) for h in run.history] == [{**_untimed(h), "skipped_steps": 0.0} for h in history]


def test_staleness_one_trains_with_bounded_gap_tis_and_overlap(tiny_cache: Path, tmp_path: Path) -> None:
    from creditgym.trainers.async_collect import policy_version

    tr = _trainer(tiny_cache, max_staleness=1, out_dir=str(tmp_path))
    assert tr.config.tis_cap == 2.0  # switched on: the generator lags the learner
    assert tr.generator is not None and tr.generator.model is not tr.model  # a separate copy generates
    before = params_vector(tr.model).clone()
    tr.train()
    assert not torch.equal(before, params_vector(tr.model))
    assert not _workers()  # train() stops the worker
    for t, m in enumerate(tr.history):
        assert all(math.isfinite(v) for v in m.values()), m
        assert "tis/mean" in m
        # batch 0 and 1 come from version 0; batch t >= 1 from version t - 1
        assert m["async/version_gap_max"] == m["async/version_gap_mean"] == (0.0 if t == 0 else 1.0)
        if t >= 1:  # batch t was collected while step t - 1 updated the policy: some of it ran behind it
            assert m["time/overlap_s"] > 0 and 0 < m["async/hidden_frac"] <= 1
    episodes = RolloutStore(tmp_path / "episodes.jsonl").read()
    assert len(episodes) == STEPS * 2 * 3
    versions = [policy_version(e) for e in episodes]  # the store round trip keeps the version
    assert versions == [max(0, i // 6 - 1) for i in range(len(episodes))]


def test_staleness_one_is_reproducible(tiny_cache: Path) -> None:
    """The schedule is fixed, not timing-driven: two async runs give the same weights and metrics."""
    a, b = _trainer(tiny_cache, max_staleness=1), _trainer(tiny_cache, max_staleness=1)
    a.train()
    b.train()
    assert torch.equal(params_vector(a.model), params_vector(b.model))
    assert [_untimed(h) for h in a.history] == [_untimed(h) for h in b.history]


def test_staleness_one_resumes_exactly(tiny_cache: Path, tmp_path: Path) -> None:
    """A checkpoint at step 2 saves the in-flight batch; resuming from it reaches the uninterrupted
    run's weights, metrics and episodes."""
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    ref = _trainer(tiny_cache, max_staleness=1, out_dir=str(ref_dir), checkpoint_every=2, resume=True)
    ref.train()

    cut = _trainer(tiny_cache, max_staleness=1, out_dir=str(cut_dir), checkpoint_every=2, resume=True)
    for _ in range(3):  # checkpoint after step 2, then step 3 is logged and the process "dies"
        cut.step()
    cut.pipeline.close()
    saved = torch.load(cut_dir / "checkpoint.pt", weights_only=False)["extra"]["pipeline"]
    assert [b["index"] for b in saved["batches"]] == [2] and saved["next"] == 3

    resumed = _trainer(tiny_cache, max_staleness=1, out_dir=str(cut_dir), checkpoint_every=2, resume=True)
    assert resumed.step_idx == 2
    resumed.train()
    assert torch.equal(params_vector(ref.model), params_vector(resumed.model))

    def rows(d: Path) -> list[dict[str, float]]:
        return [_untimed(json.loads(line)) for line in (d / "metrics.jsonl").read_text().splitlines()]

    assert rows(ref_dir) == rows(cut_dir)
    played = [
        [
            (e.group_id.split("-", 1)[1], [t.action_ids for t in e.turns], e.meta["policy_version"])
            for e in RolloutStore(d / "episodes.jsonl").read()
        ]
        for d in (ref_dir, cut_dir)
    ]  # group ids: run prefix dropped
    assert len(played[0]) == STEPS * 6 and played[0] == played[1]


def test_recredit_and_view_keep_the_policy_version(tiny_cache: Path, tmp_path: Path) -> None:
    from creditgym.trainers.async_collect import POLICY_VERSION
    from creditgym.viewer.data import report_data
    from creditgym.viewer.recredit import read_episodes, recredit

    _trainer(tiny_cache, max_staleness=1, steps=3, out_dir=str(tmp_path)).train()
    credited = recredit(read_episodes(tmp_path), "grpo")
    assert [e.meta[POLICY_VERSION] for e in credited] == [0] * 12 + [1] * 6
    records = report_data(credited, {"grpo": [e.meta.get("credit") for e in credited]})["E"]
    assert [r["v"] for r in records] == [0] * 12 + [1] * 6


def test_bad_staleness_settings_say_what_to_do(tiny_cache: Path) -> None:
    from creditgym.trainers.async_collect import snapshot_generator

    with pytest.raises(ValueError, match="max_staleness=-1: use 0"):
        _trainer(tiny_cache, max_staleness=-1)
    with pytest.raises(ValueError, match="dynamic_sampling=False or max_staleness=0"):
        _trainer(tiny_cache, max_staleness=1, dynamic_sampling=True)
    with pytest.raises(TypeError, match="pass generator="):
        snapshot_generator(object())  # type: ignore[arg-type]


def test_ready_collector_needs_a_generator(tiny_cache: Path) -> None:
    from creditgym.agents.rollout import Collector
    from creditgym.trainers.grpo import GRPOTrainer

    policy = build_tiny(tiny_cache)
    collector = Collector(policy, "TrainerTestLetter-v0", group_size=3)
    with pytest.raises(ValueError, match="pass that collector's policy as generator="):
        GRPOTrainer(policy, None, _cfg(max_staleness=1), collector=collector)


KILL_SCRIPT = r"""
import os, signal, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {helpers!r})
from pathlib import Path
from _trainer_helpers import build_tiny, params_vector, register_letter_env
register_letter_env()
from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer
out, kill_after = sys.argv[1], int(sys.argv[2])
cfg = GRPOConfig(steps=5, num_groups=2, group_size=3, max_new_tokens=5, lr=1e-3, out_dir=out, checkpoint_every=2,
                 resume=True, tensorboard=False, seed=3, max_staleness=1)
tr = GRPOTrainer(build_tiny(Path({cache!r})), "TrainerTestLetter-v0", cfg)
while tr.step_idx < tr.total_steps:
    tr.step()
    if tr.step_idx == kill_after:  # the worker is collecting the next batch now
        os.kill(os.getpid(), signal.SIGKILL)
torch.save(params_vector(tr.model), Path(out) / "final.pt")
"""


@pytest.mark.slow
def test_staleness_one_sigkill_then_resume_is_exact(tiny_cache: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(helpers=str(Path(__file__).parent), cache=str(tiny_cache)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    subprocess.run([sys.executable, str(script), str(ref), "-1"], check=True, env=env, timeout=300)
    killed = subprocess.run([sys.executable, str(script), str(cut), "3"], env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    subprocess.run([sys.executable, str(script), str(cut), "-1"], check=True, env=env, timeout=300)
    assert torch.equal(torch.load(ref / "final.pt"), torch.load(cut / "final.pt"))


@pytest.mark.parametrize("staleness", [1, 2, 3])
def test_pipeline_schedule_keeps_the_bound(staleness: int) -> None:
    """Without a trainer: batch j is submitted at step max(0, j - S) and generated by that version,
    and the generator gets one full snapshot, then trainable weights only."""
    from creditgym import Episode
    from creditgym.trainers.async_collect import StalenessPipeline, policy_version

    loaded: list[tuple[bool, int]] = []
    submitted_at: list[int] = []  # the learner step at which each batch's tasks were drawn

    def collect(specs: list[Any], index: int) -> tuple[list[Any], list[Any], dict[str, float]]:
        return [Episode(episode_id=f"e{index}")], [(specs, [])], {"m": float(index)}

    pipe = StalenessPipeline(staleness, lambda w: loaded.append((bool(w["full"]), int(w["version"]))))
    steps = 7
    for t in range(steps):
        pipe.submit_up_to(
            t,
            steps - 1,
            weights=lambda trainable_only, t=t: {
                "full": torch.tensor(not trainable_only),
                "version": torch.tensor(t),
            },
            specs_for=lambda t=t: submitted_at.append(t) or [],
            collect=collect,
        )
        batch, wait_s = pipe.take(t)
        assert batch.index == t and batch.version == max(0, t - staleness) and wait_s >= 0
        assert policy_version(batch.episodes[0]) == batch.version and batch.metrics == {"m": float(t)}
        m = pipe.metrics(batch, t, wait_s)
        assert m["async/version_gap_max"] == m["async/version_gap_mean"] == t - batch.version <= staleness
    pipe.close()
    assert submitted_at == [max(0, j - staleness) for j in range(steps)]
    assert loaded == [(True, 0)] + [(False, v) for v in range(1, steps - staleness)]


def test_checkpoint_state_is_read_after_the_worker_finishes(tiny_cache: Path) -> None:
    """The collect counter and the Collector's counters are saved after the in-flight batch, even when
    the worker is still collecting when `state_dict()` is called (a slow collection stands in)."""
    import time

    tr = _trainer(tiny_cache, max_staleness=1)
    collect_round = tr._collect_round

    def slow_round(*args: Any, **kw: Any) -> Any:
        time.sleep(0.3)  # the counters move only after this
        return collect_round(*args, **kw)

    tr._collect_round = slow_round
    tr.step()
    tr.step()  # submitted batch 2, which is now sleeping on the worker
    state = tr.state_dict()
    assert [b["index"] for b in state["pipeline"]["batches"]] == [2]
    assert state["collect_calls"] == 3 and state["collector"] == tr.collector.state_dict()
    tr.pipeline.close()
