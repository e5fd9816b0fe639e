"""`creditgym recredit` and `creditgym view` end to end through the Typer app."""

from __future__ import annotations

from typer.testing import CliRunner

from creditgym.cli import app
from creditgym.store import RolloutStore
from creditgym.viewer import recredit

from ._episodes import hand_built

runner = CliRunner()


def test_recredit_command_writes_credited_episodes(tmp_path):
    episodes = hand_built()
    RolloutStore(tmp_path / "episodes.jsonl").extend(episodes)
    out = tmp_path / "out.jsonl"
    for source in (tmp_path / "episodes.jsonl", tmp_path):  # a file or a run directory
        res = runner.invoke(app, ["recredit", str(source), "--estimator", "gigpo", "--cfg", "gamma=0.9",
                                  "--cfg", "norm=std", "-o", str(out)])  # fmt: skip
        assert res.exit_code == 0, res.output
        back = RolloutStore(out).read()
        expected = recredit(episodes, "gigpo", gamma=0.9, norm="std")
        assert [e.meta["credit"] for e in back] == [e.meta["credit"] for e in expected]  # replaced, not appended


def test_recredit_command_says_what_to_supply(tmp_path):
    RolloutStore(tmp_path / "in.jsonl").extend(hand_built())
    res = runner.invoke(app, ["recredit", str(tmp_path / "in.jsonl"), "-e", "vineppo", "-o", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "Collector.branch" in res.output
    res = runner.invoke(app, ["recredit", str(tmp_path / "in.jsonl"), "-e", "grpo", "--cfg", "gamma", "-o", "x.jsonl"])
    assert res.exit_code != 0 and "KEY=VALUE" in res.output


def test_view_command_writes_a_report(tmp_path):
    RolloutStore(tmp_path / "episodes.jsonl").extend(hand_built())
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n{"step": 2, "reward": 0.75}\n')
    out = tmp_path / "report.html"
    res = runner.invoke(app, ["view", str(tmp_path), "-o", str(out), "--compare", "rloo"])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert '"est":["grpo","rloo"]' in html and ">reward</text>" in html


def test_train_report_writes_the_runs_credit_report(tmp_path):
    """`creditgym train ... --out-dir D --report R` colours the run's own episodes by its estimator."""
    run, out = tmp_path / "run", tmp_path / "report.html"
    args = ["train", "creditgym/SearchEasy-v0", "--report", str(out), "--estimator", "rloo", "--steps", "1",
            "--num-groups", "1", "--group-size", "2", "--max-new-tokens", "8", "--out-dir", str(run)]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert '"est":["rloo"]' in html and len(RolloutStore(run / "episodes.jsonl").read()) == 2
    res = runner.invoke(app, ["train", "creditgym/SearchEasy-v0", "--report", str(out), "--steps", "1"])
    assert res.exit_code != 0 and "--out-dir" in res.output


def test_quickstart_writes_report_html(tmp_path, monkeypatch):
    """The quickstart command ends by writing DIR/report.html under the run's estimator (the RL stage
    itself is tested in tests/trainers; here a stand-in run leaves its episodes)."""
    import creditgym.cli.quickstart as qs

    def fake_run(out, cfg):
        RolloutStore(out / "episodes.jsonl").extend(hand_built())
        stage = {"success": 0.5, "reward": 0.5}
        return {"split": "test", "n_eval": 2, "before": stage, "after": stage, "seconds": 1.0,
                "sft_model": str(out / "sft_model"), "final_model": str(out / "final_model")}  # fmt: skip

    monkeypatch.setattr(qs, "run_quickstart", fake_run)
    res = runner.invoke(app, ["quickstart", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert '"est":["turn_return"]' in (tmp_path / "report.html").read_text()
    (tmp_path / "report.html").unlink()
    assert runner.invoke(app, ["quickstart", "--out", str(tmp_path), "--no-report"]).exit_code == 0
    assert not (tmp_path / "report.html").exists()
