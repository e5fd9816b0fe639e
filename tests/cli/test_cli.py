import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from creditgym.cli import COMMANDS, app
from creditgym.cli.train import config_from_flags
from creditgym.trainers import GRPOConfig, SFTConfig

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_envs_lists_with_descriptions():
    res = runner.invoke(app, ["envs"])
    assert res.exit_code == 0, res.output


def test_check_file_id_passes_and_is_imported_once():
    src = f"{ROOT / 'examples' / 'custom_env.py'}:GuessNumber-v0"
    res = runner.invoke(app, ["check", src, "--seeds", "3"])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output
    # a second check of the same file reuses the import (re-registering would be a no-op anyway)
    res = runner.invoke(app, ["check", src, "--seeds", "2"])
    assert res.exit_code == 0, res.output


def test_check_module_id(tmp_path, monkeypatch):
    (tmp_path / "my_envs_mod.py").write_text(
        "import creditgym, importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ce', {str(ROOT / 'examples' / 'custom_env.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['ce'] = m; spec.loader.exec_module(m)\n"
        "creditgym.register('MyGuess-v0', 'ce:GuessNumberEnv')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    res = runner.invoke(app, ["check", "my_envs_mod:MyGuess-v0", "--seeds", "2"])
    assert res.exit_code == 0, res.output


def test_check_unknown_env_fails_cleanly():
    res = runner.invoke(app, ["check", "NoSuchEnv-v0"])
    assert res.exit_code == 2 and "could not build" in res.output


@pytest.mark.parametrize("cmd", [[], *([c] for c in COMMANDS)])
def test_help_on_every_command(cmd):
    res = runner.invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0 and "Usage" in res.output


def test_python_dash_m_from_repo_root():
    out = subprocess.run([sys.executable, "-m", "creditgym", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "check" in out.stdout


def test_top_level_help_imports_no_command_module():
    code = ("import sys; from creditgym.cli import app\ntry: app(['--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('creditgym.cli.', 'creditgym.trainers'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "[]", out.stdout + out.stderr


def test_train_flags_build_the_config_as_before():
    args = ["--estimator", "gigpo", "--steps", "3", "--env-kwargs", '{"hops":[3,3]}', "--outcome-key=none",
            "--collect-overrides", '{"greedy": true}', "--temperature", "0.7", "--progress"]
    assert config_from_flags(GRPOConfig, args) == GRPOConfig(
        estimator="gigpo", steps=3, env_kwargs={"hops": [3, 3]}, outcome_key=None,
        collect_overrides={"greedy": True}, temperature=0.7, progress=True,
    )  # fmt: skip
    assert config_from_flags(SFTConfig, ["--rft-n", "2", "--env-kwargs", "{}"]) == SFTConfig(rft_n=2)


def test_train_rejects_bad_flags_with_what_to_do():
    res = runner.invoke(app, ["train", "creditgym/SearchEasy-v0", "--stepz", "3"])
    assert res.exit_code == 2 and "unknown flag --stepz 3 for GRPOConfig" in res.output and "--list-flags" in res.output
    res = runner.invoke(app, ["train", "creditgym/SearchEasy-v0", "--env-kwargs", "{not json"])
    assert res.exit_code == 2 and "--env-kwargs" in res.output
    res = runner.invoke(app, ["train", "--list-flags"])
    assert res.exit_code == 0 and "--env-kwargs JSON" in res.output and "Collect-credit-update rounds" in res.output


def test_unknown_command_and_bench_target_fail_cleanly():
    assert runner.invoke(app, ["nosuch"]).exit_code == 2
    res = runner.invoke(app, ["bench", "nosuch"])
    assert res.exit_code == 2 and "unknown bench target" in res.output


def test_bench_target_help_lists_the_targets_own_options():
    res = runner.invoke(app, ["bench", "accuracy", "--help"])
    assert res.exit_code == 0 and "--epsilon" in res.output and "--branches" in res.output
    res = runner.invoke(app, ["bench", "--help"])
    assert res.exit_code == 0 and all(t in res.output for t in ("accuracy", "credit", "rollout", "train", "trl"))


def test_package_init_does_not_import_cli():
    code = "import sys, creditgym; print('creditgym.cli' in sys.modules, 'creditgym.trainers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]


def test_readme_diagram_marks_the_viewer_planned_until_view_exists():
    diagram = (ROOT / "README.md").read_text().split("```")[1]
    lines = [line for line in diagram.splitlines() if "viewer" in line]
    if "view" not in COMMANDS:
        assert lines and all("planned" in line for line in lines), lines
