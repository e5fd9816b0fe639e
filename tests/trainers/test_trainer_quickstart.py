"""The quickstart at a tiny budget writes every promised file; the CLI registers its commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _cache(tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITGYM_CACHE", str(tiny_cache))


def test_quickstart_tiny_budget_writes_summary_and_files(tmp_path: Path) -> None:
    from creditgym.trainers.quickstart import QuickstartConfig, run_quickstart

    cfg = QuickstartConfig(hidden_size=32, num_layers=1, expert_episodes=8, sft_epochs=1, rl_steps=1, num_groups=1,
                           group_size=2, n_eval=4, threads=1, progress=False, max_new_tokens=16,
                           induction_steps=3)
    s = run_quickstart(tmp_path, cfg)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["before"]["success"] == s["before"]["success"]
    for key in ("before", "after", "seed", "seconds", "split", "n_eval"):
        assert key in on_disk
    assert on_disk["split"] == "test" and on_disk["n_eval"] == 4 and on_disk["seed"] == 0
    assert 0.0 <= on_disk["before"]["success"] <= 1.0 and 0.0 <= on_disk["after"]["success"] <= 1.0
    assert on_disk["seconds"] > 0
    assert on_disk["induction"]["steps"] == 3 and "induction_s" in on_disk["stages_s"]
    from creditgym.store import RolloutStore

    assert len(RolloutStore(tmp_path / "episodes.jsonl").read()) == 2
    assert (tmp_path / "reward_curve.png").stat().st_size > 1000
    assert (tmp_path / "metrics.jsonl").is_file() and (tmp_path / "sft" / "metrics.jsonl").is_file()
    _eval_from_saved_folders_reproduces_the_summary(tmp_path, on_disk)


def _eval_from_saved_folders_reproduces_the_summary(out: Path, summary: dict) -> None:
    """`creditgym eval ENV --model OUT/final_model` (no other flag) gives the summary's after number
    exactly, sft_model/ its before number; `--split heldout` evaluates that split the same way."""
    from typer.testing import CliRunner

    from creditgym.agents.hf import HFPolicy
    from creditgym.cli import app

    assert summary["sft_model"] == str(out / "sft_model") and summary["final_model"] == str(out / "final_model")
    for stage, folder in (("after", "final_model"), ("before", "sft_model")):
        HFPolicy.from_pretrained(out / folder)
        saved = json.loads((out / folder / "eval_config.json").read_text())
        assert saved["split"] == "test" and saved["n_eval"] == 4 and "corpus" not in saved["env_kwargs"]
        res = CliRunner().invoke(app, ["eval", "creditgym/SearchEasy-v0", "--model", str(out / folder),
                                       "--json-out", str(out / f"{stage}.json")])  # fmt: skip
        assert res.exit_code == 0, res.output
        got = json.loads((out / f"{stage}.json").read_text())
        assert (got["success"], got["reward"], got["n"]) == (summary[stage]["success"], summary[stage]["reward"], 4)
    res = CliRunner().invoke(app, ["eval", "creditgym/SearchEasy-v0", "--model", str(out / "final_model"),
                                   "--split", "heldout", "--json-out", str(out / "heldout.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((out / "heldout.json").read_text())["split"] == "heldout"


def test_eval_of_a_model_folder_without_eval_config_asks_for_env_kwargs(tmp_path: Path) -> None:
    import typer

    from creditgym.cli.eval import eval_settings
    from creditgym.trainers.evaluate import save_eval_config

    with pytest.raises(typer.BadParameter, match=r"no eval_config.json.*--env-kwargs"):
        eval_settings(str(tmp_path), "creditgym/SearchEasy-v0", {"n_eval": None}, None)
    got = eval_settings(str(tmp_path), "creditgym/SearchEasy-v0", {"n_eval": 3, "seed": None}, '{"topk": 1}')
    assert got == {"n_eval": 3, "seed": 12_345, "env_kwargs": {"topk": 1}}
    save_eval_config(tmp_path, "creditgym/Search-v0", env_kwargs={"topk": 2, "split": "train"}, n_eval=5, seed=9)
    with pytest.raises(typer.BadParameter, match="written for creditgym/Search-v0"):
        eval_settings(str(tmp_path), "creditgym/SearchEasy-v0", {}, None)
    got = eval_settings(str(tmp_path), "creditgym/Search-v0", {"n_eval": None, "split": "heldout"}, None)
    assert got == {"n_eval": 5, "split": "heldout", "env_kwargs": {"topk": 2}}
    assert eval_settings("tiny", "creditgym/Search-v0", {"seed": None}, None) == {"seed": 12_345, "env_kwargs": {}}


def test_invalid_penalty_shapes_training_episodes_only() -> None:
    from creditgym.trainers.quickstart import QuickstartConfig

    cfg = QuickstartConfig(invalid_penalty=-0.1, reward="char_f1")
    assert cfg.train_env_kwargs()["invalid_penalty"] == -0.1 and cfg.train_env_kwargs()["reward"] == "char_f1"
    assert "invalid_penalty" not in cfg.eval_kwargs()["env_kwargs"]
    assert "invalid_penalty" not in QuickstartConfig().train_env_kwargs()


def test_sft_successes_only_trains_on_the_successful_expert_episodes(tmp_path: Path) -> None:
    from creditgym.store import RolloutStore
    from creditgym.trainers.quickstart import QuickstartConfig, warm_start

    cfg = QuickstartConfig(hidden_size=32, num_layers=1, expert_episodes=12, sft_epochs=1, threads=1, progress=False,
                           max_new_tokens=16, induction_steps=0, sft_successes_only=True)  # fmt: skip
    _, report = warm_start(cfg, tmp_path)
    expert = RolloutStore(tmp_path / "expert_episodes.jsonl").read()
    wins = sum(e.outcome.get("success", 0.0) >= 1.0 for e in expert)
    assert len(expert) == 12 and 0 < wins < 12  # epsilon 0.4 fails some episodes
    assert report["sft"]["episodes"] == wins


def test_warm_start_on_another_env_and_policy_writes_nothing_without_out_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the examples use: `env_kwargs` replaces Search's (Device rejects `topk`), `policy` the tiny build."""
    from creditgym.envs.device import DEVICE
    from creditgym.trainers.quickstart import QuickstartConfig, tiny_policy, warm_start

    cfg = QuickstartConfig(env_id=DEVICE, hidden_size=32, num_layers=1, expert_episodes=2, sft_epochs=1, threads=1,
                           progress=False, induction_steps=0)  # fmt: skip
    given = tiny_policy(cfg)
    monkeypatch.chdir(tmp_path)
    policy, report = warm_start(cfg, env_kwargs={"difficulty": 1, "max_turns": 2}, policy=given)
    assert policy is given and report["sft"]["episodes"] == 2 and report["sft"]["steps"] >= 1
    assert list(tmp_path.iterdir()) == []


def test_cli_registers_train_eval_quickstart_and_parses_config_flags() -> None:
    from typer.testing import CliRunner

    from creditgym.cli import COMMANDS, app

    names = set(COMMANDS)
    assert {"train", "eval", "quickstart"} <= names
    res = CliRunner().invoke(app, ["train", "--trainer", "ppo", "--list-flags"])
    assert res.exit_code == 0 and "--vf-clip" in res.output and "CleanRL" in res.output

    from creditgym.cli.train import config_from_flags
    from creditgym.trainers.grpo import GRPOConfig

    cfg = config_from_flags(GRPOConfig, ["--steps", "3", "--lr=1e-4", "--dynamic-sampling", "--no-tensorboard",
                                         "--estimator-cfg", '{"gamma": 0.9}', "--dual-clip-c", "none",
                                         "--adam-betas", "[0.9, 0.95]"])
    assert (cfg.steps, cfg.lr, cfg.dynamic_sampling, cfg.tensorboard) == (3, 1e-4, True, False)
    assert cfg.estimator_cfg == {"gamma": 0.9} and cfg.dual_clip_c is None and cfg.adam_betas == (0.9, 0.95)
    import typer

    with pytest.raises(typer.BadParameter, match="unknown flag"):
        config_from_flags(GRPOConfig, ["--stepz", "3"])
