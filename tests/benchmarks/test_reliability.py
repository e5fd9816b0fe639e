"""The reliability suite (docs/reliability.md): a fast subset in CI, the full bench under `-m slow`.

Every test here fails when any row of its area failed; the `Bad*` envs below prove that the
drivers can see a crash, a hang and a broken observation.
"""

from __future__ import annotations

import json
import random
import time

import gymnasium
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from creditgym.benchmarks import drills, fuzz, hostile, nonfinite, reliability
from creditgym.cli import app

CI_ACTIONS = 300
ENV_IDS = fuzz.registered_env_ids()


def _explain(rows) -> str:
    return "\n".join(f"{r.area} {r.case}: {r.status} {r.detail}" for r in rows if r.failed)


# ---------------------------------------------------------------------- fuzz


def test_every_builtin_env_is_fuzzed():
    assert len(ENV_IDS) >= 10 and all(e.startswith("creditgym/") for e in ENV_IDS)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_fuzz_env_survives_hostile_actions(env_id):
    row = fuzz.fuzz_env(env_id, CI_ACTIONS, seed=0, hang_s=5.0)
    assert row.tried == CI_ACTIONS
    assert row.episodes >= 2, "episodes must end and reset under fuzz"
    assert row.failed == 0, json.dumps(row.failures, indent=1)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_collector_survives_fuzz_policy(env_id):
    out = fuzz.fuzz_collector(env_id, num_groups=2, group_size=2, seed=1)
    assert out["ok"], out["detail"]
    assert out["episodes"] >= 4


class _BadEnv(gymnasium.Env):
    """Steps that crash on "boom", sleep on "slow", and return a lone surrogate on "surrogate"."""

    metadata: dict = {"render_modes": []}

    def __init__(self):
        self.observation_space = gymnasium.spaces.Text(100)
        self.action_space = gymnasium.spaces.Text(100)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "start", {"state_key": "s"}

    def _valid_actions(self):
        return ["boom", "slow", "surrogate", "fine"]

    def step(self, action):
        if "boom" in action:
            raise RuntimeError("boom")
        if "slow" in action:
            time.sleep(0.3)
        obs = "\ud800" if "surrogate" in action else "ok"
        return obs, 0.0, False, False, {"state_key": "s"}


gymnasium.register("reliabilitytest/Bad-v0", entry_point=_BadEnv, disable_env_checker=True)


def test_fuzz_reports_crashes_hangs_and_bad_observations():
    row = fuzz.fuzz_env("reliabilitytest/Bad-v0", 200, seed=0, hang_s=0.1)
    assert row.exceptions > 0 and row.hangs > 0 and row.bad_outputs > 0
    assert row.failed == row.exceptions + row.hangs + row.bad_outputs
    kinds = {f["kind"] for f in row.failures}
    assert {"exception", "hang"} <= kinds
    assert any("RuntimeError: boom" in f["detail"] for f in row.failures)


def test_hostile_strings_are_seeded_and_cover_the_nasty_cases():
    a = [hostile.hostile_string(random.Random(7)) for _ in range(3)]
    b = [hostile.hostile_string(random.Random(7)) for _ in range(3)]
    assert a == b
    rng = random.Random(0)
    draws = [hostile.hostile_string(rng) for _ in range(3000)]
    assert any("\x00" in s for s in draws)
    assert any(any("\ud800" <= c <= "\udfff" for c in s) for s in draws)
    assert any(len(s) >= 100_000 for s in draws)
    assert any(s.startswith("[" * 100) for s in draws)


@given(st.lists(st.text(max_size=40), max_size=4), st.integers(0, 2**32))
def test_near_miss_is_a_deterministic_string(seeds, seed):
    x = hostile.near_miss(random.Random(seed), seeds)
    assert isinstance(x, str)
    assert x == hostile.near_miss(random.Random(seed), seeds)


def test_near_miss_mutations_by_hand():
    r = random.Random(0)
    assert hostile._double(r, "ab") in ("abab", "ab\nab", "ab ab")
    assert hostile._cut_tag(random.Random(1), "<answer>x</answer>") != "<answer>x</answer>"
    assert hostile._path_traversal(random.Random(0), "<search>q</search>").startswith("<search>")
    out = hostile._json_types(random.Random(3), 'call {"name": "calc", "arguments": {"x": 1}}')
    assert out.startswith("call ") and out != 'call {"name": "calc", "arguments": {"x": 1}}'


# ---------------------------------------------------------------------- store and checkpoint drills


def test_store_kill_drill_loses_nothing(tmp_path):
    row = drills.store_kill_drill(kills=3, seed=0, workdir=str(tmp_path))
    assert row.tried == 3 and row.acknowledged > 0
    assert row.failed == 0 and row.recovered == row.acknowledged, row.failures


def test_checkpoint_kill_drill_resumes_from_a_complete_file(tmp_path):
    row = drills.checkpoint_kill_drill(kills=2, seed=0, workdir=str(tmp_path))
    assert row.tried == 2 and row.failed == 0, row.failures


def test_kill_reads_every_line_the_writer_printed():
    # regression: `readline` buffers what follows "ready"; `communicate` then read the raw pipe and lost
    # it, so acknowledgements went missing or started mid-line (a phantom '' id "lost" in the drill)
    script = "import sys, time\nsys.stdout.write('ready\\n' + ''.join(f'{i}\\n' for i in range(1000)))\nsys.stdout.flush()\ntime.sleep(60)\n"
    assert drills._run_and_kill(script, [], delay_s=0.2) == [str(i) for i in range(1000)]


def test_torn_line_holding_an_acknowledged_id_is_a_failure(tmp_path):
    path = tmp_path / "episodes.jsonl"
    path.write_text('{"episode_id": "a"}\n{"episode_id": "b", "tur\n{"episode_id": "c"}\n')
    row = drills.DrillRow(name="store")
    assert drills._count_torn(path, {"a", "c"}, row) == 1 and row.failed == 0
    assert drills._count_torn(path, {"b"}, row) == 1 and row.failed == 1


# ---------------------------------------------------------------------- non-finite rewards


def test_nonfinite_rewards_are_contained_for_every_estimator():
    rows = reliability.nonfinite_rows()
    assert {r.case for r in rows} == set(nonfinite.ESTIMATORS)
    assert not any(r.failed for r in rows), _explain(rows)


def test_nonfinite_detector_sees_whitening_spread_without_the_drop():
    # reinforce++ whitens over the batch: one NaN reaches every row unless its group is dropped first
    row = nonfinite.run_estimator("reinforce++")
    assert row.contained and row.dropped_groups == len(nonfinite.POISON)
    assert row.without_drop == "spreads"


# ---------------------------------------------------------------------- sandbox, HTTP, the driver


@pytest.mark.slow  # CI runs the matrix itself in tests/envs/test_tools_escape.py
def test_sandbox_escape_matrix_rows_pass():
    rows = reliability.sandbox_rows()
    assert rows and not any(r.failed for r in rows), _explain(rows)


def test_sandbox_rows_by_hand():
    results = {
        "subprocess": [{"name": "network", "contained": False, "detail": "reached"},
                       {"name": "cpu_loop", "contained": True, "detail": ""},
                       {"name": "memory_4gb", "contained": False, "detail": "allocated"}],
        "bwrap": [{"name": "network", "contained": False, "detail": "reached"},
                  {"name": "root_only_file", "contained": True, "detail": ""}],
        "docker": [{"name": "network", "contained": None, "detail": "", "skipped": "no engine"}],
    }  # fmt: skip
    rows = reliability.sandbox_rows(matrix=results.__getitem__)
    got = {r.case: (r.tried, r.contained, r.failed, r.status) for r in rows}
    assert got == {
        "subprocess: network": (1, 0, 0, "not a boundary"),
        "subprocess: cpu_loop": (1, 1, 0, "ok"),
        "subprocess: memory_4gb": (1, 0, 1, "failed"),
        "bwrap: network": (1, 0, 1, "failed"),
        "bwrap: root_only_file": (1, 1, 0, "ok"),
        "docker: network": (0, 0, 0, "skipped"),
    }


@pytest.mark.slow  # CI runs the matrix itself in tests/envs/test_http_faults.py (40 s here at timeout_s=1)
def test_http_fault_matrix_rows_pass():
    rows = reliability.http_rows(timeout_s=1.0)
    assert rows and not any(r.failed for r in rows), _explain(rows)


def test_http_rows_by_hand():
    def matrix(timeout_s):
        row = {"area": "http", "client": "c", "seconds": 0.5, "detail": ""}
        return [{**row, "fault": f, "outcome": o} for f, o in (("hang", "contained"), ("trickle", "failed"), ("x", "skipped"))]

    got = [(r.case, r.tried, r.contained, r.failed, r.status) for r in reliability.http_rows(matrix=matrix)]
    assert got == [("c: hang", 1, 1, 0, "ok"), ("c: trickle", 1, 0, 1, "failed"), ("c: x", 0, 0, 0, "skipped")]


def test_area_summary_by_hand():
    rows = [
        reliability.Row("fuzz", "a", 10, 9, 1, "failed"),
        reliability.Row("fuzz", "b", 5, 5, 0),
        reliability.Row("http", "c", 0, 0, 0, "not available"),
    ]
    assert reliability.area_summary(rows) == [
        {"area": "fuzz", "tried": 15, "contained": 14, "failed": 1, "skipped": 0},
        {"area": "http", "tried": 0, "contained": 0, "failed": 0, "skipped": 1},
    ]


def test_run_rejects_unknown_area():
    with pytest.raises(ValueError, match="unknown areas"):
        reliability.run(["fuzz", "nope"])


def test_cli_bench_reliability_writes_json(tmp_path):
    out = tmp_path / "rel.json"
    args = ["bench", "reliability", "--actions", "20", "--areas", "fuzz", "--envs", "creditgym/SearchEasy-v0", "--json", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert [r["case"] for r in data["rows"]] == ["creditgym/SearchEasy-v0", "collector creditgym/SearchEasy-v0"]
    assert data["summary"] == [{"area": "fuzz", "tried": 21, "contained": 21, "failed": 0, "skipped": 0}]
    assert "contained/survived" in res.output


def test_cli_bench_reliability_exits_1_on_a_failed_row(tmp_path):
    args = ["bench", "reliability", "--actions", "30", "--areas", "fuzz", "--envs", "reliabilitytest/Bad-v0", "--hang-s", "0.1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output


@pytest.mark.slow
def test_full_reliability_bench(tmp_path):
    rows = reliability.run(reliability.AREAS, actions=10_000, kills=50)
    assert not any(r.failed for r in rows), _explain(rows)
