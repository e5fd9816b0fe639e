"""`collect_offline`: mixed-quality offline episodes with the mix recorded (issue 20 item 5)."""

from __future__ import annotations

import json
from pathlib import Path

from creditgym.agents.offline import collect_offline, manifest_path
from creditgym.envs.device import DEVICE
from creditgym.store import RolloutStore

KW = {"difficulty": 1, "max_turns": 8}


def test_mix_is_recorded_in_meta_store_and_manifest(tmp_path: Path) -> None:
    path = tmp_path / "offline.jsonl"
    eps = collect_offline(DEVICE, path, n_expert=3, n_noisy=4, n_random=2, epsilon=0.5, env_kwargs=KW, seed=1)
    assert [e.meta["offline"]["source"] for e in eps] == ["expert"] * 3 + ["noisy_expert"] * 4 + ["random"] * 2
    assert all(e.meta["offline"]["mix"] == {"expert": 3, "noisy_expert": 4, "random": 2} for e in eps)
    assert {e.meta["offline"]["epsilon"] for e in eps if e.meta["offline"]["source"] == "noisy_expert"} == {0.5}
    stored = RolloutStore(path).read()
    assert [e.episode_id for e in stored] == [e.episode_id for e in eps]
    assert stored[5].meta["offline"] == eps[5].meta["offline"]
    manifest = json.loads(manifest_path(path).read_text())
    assert manifest["mix"] == {"expert": 3, "noisy_expert": 4, "random": 2} and manifest["episodes"] == 9
    assert manifest["sources"]["expert"]["success"] == 1.0  # the scripted expert solves difficulty 1
    assert manifest["sources"]["random"]["success"] == 0.0
    assert manifest["env_kwargs"] == KW


def test_quality_is_mixed_and_collection_is_deterministic() -> None:
    a = collect_offline(DEVICE, n_expert=4, n_noisy=8, n_random=4, epsilon=0.5, env_kwargs=KW, seed=0)
    b = collect_offline(DEVICE, n_expert=4, n_noisy=8, n_random=4, epsilon=0.5, env_kwargs=KW, seed=0)
    assert [[t.action_text for t in e.turns] for e in a] == [[t.action_text for t in e.turns] for e in b]
    succ = {s: [e.outcome["success"] for e in a if e.meta["offline"]["source"] == s] for s in ("expert", "noisy_expert", "random")}
    assert sum(succ["expert"]) / 4 > sum(succ["noisy_expert"]) / 8 > sum(succ["random"]) / 4 - 1e-9
    # each source plays its own tasks
    tasks = {s: {e.task_id for e in a if e.meta["offline"]["source"] == s} for s in succ}
    assert not tasks["expert"] & tasks["random"]


def test_bad_arguments_raise() -> None:
    import pytest

    with pytest.raises(ValueError, match="policy="):
        collect_offline(DEVICE, n_expert=1, n_noisy=0, n_random=0, n_policy=2)
    with pytest.raises(ValueError, match="epsilon"):
        collect_offline(DEVICE, epsilon=1.5)
