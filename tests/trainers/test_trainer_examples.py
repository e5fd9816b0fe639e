"""Smoke tests: every training example runs end to end at a tiny budget."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import tyro

from creditgym.cli.train import config_from_flags
from creditgym.trainers import DigiQConfig, DigiRLConfig, GRPOConfig, PPOConfig
from creditgym.trainers.flags import CONFIG_FLAGS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TINY = ["--hidden", "32", "--layers", "1"]
# every training example and the trainer Config its `train` flags are (spelled as in `creditgym train`)
CONFIGS = {"train_search_grpo": GRPOConfig, "train_tools_ppo": PPOConfig, "train_device_gigpo": GRPOConfig,
           "redteam_selfplay": GRPOConfig, "custom_env_train": GRPOConfig, "compare_credit": GRPOConfig,
           "train_search_smollm2_lora": GRPOConfig, "train_search_flowrl": GRPOConfig, "train_search_ttrl": GRPOConfig,
           "curriculum_sec": GRPOConfig, "device_digirl": DigiRLConfig, "device_digiq": DigiQConfig,
           "redteam_sema": GRPOConfig}  # fmt: skip


@pytest.fixture(autouse=True)
def _cache(tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from creditgym.agents import tiny

    monkeypatch.setenv("CREDITGYM_CACHE", str(tiny_cache))
    # a tokenizer corpus from one env builds in seconds (byte-level BPE still covers every env's text)
    monkeypatch.setattr(tiny, "registered_env_ids", lambda: ["creditgym/SearchEasy-v0"])


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _run(name: str, args: list[str]) -> dict:
    return _load(name).main(args)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_example_help_lists_every_config_flag(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _run(name, ["--help"])
    assert exited.value.code == 0
    shown = set(re.findall(r"--[a-z0-9][a-z0-9-]*", capsys.readouterr().out))
    wanted = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(CONFIGS[name])}
    assert wanted <= shown, sorted(wanted - shown)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_example_config_flags_parse_as_in_creditgym_train(name: str) -> None:
    """The same flags give the same Config values in the example and in `creditgym train`
    (JSON for a dict, `none` for an optional field, `--no-` for a boolean)."""
    flags = ["--env-kwargs", '{"k": [1, 2]}', "--lr", "0.25", "--seed", "3", "--out-dir", "none", "--no-tensorboard"]
    example = tyro.cli(_load(name).Args, args=flags, registry=CONFIG_FLAGS).train
    cli = config_from_flags(CONFIGS[name], flags)
    assert isinstance(example, CONFIGS[name])
    for key in ("env_kwargs", "lr", "seed", "out_dir", "tensorboard"):
        assert getattr(example, key) == getattr(cli, key), key
    assert example.env_kwargs == {"k": [1, 2]} and example.out_dir is None and not example.tensorboard


def test_example_flag_errors_are_usage_errors() -> None:
    with pytest.raises(SystemExit) as exited:
        _run("train_search_grpo", ["--groups", "2"])  # the old spelling: GRPOConfig's is --num-groups
    assert exited.value.code == 2


def _is_fraction(x: float) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0 and not math.isnan(x)


def test_train_search_grpo_smoke() -> None:
    out = _run("train_search_grpo", [*TINY, "--steps", "1", "--num-groups", "1", "--group-size", "2",
                                     "--expert-episodes", "4", "--sft-epochs", "1", "--n-eval", "2",
                                     "--clip-eps-high", "0.28", "--dynamic-sampling", "--allow-short-batch"])  # DAPO
    assert _is_fraction(out["before"]) and _is_fraction(out["after"]) and out["train"]["steps"] == 1


@pytest.mark.slow  # ~30 s on 2 shared cores; run with -m slow
def test_train_tools_ppo_smoke() -> None:
    out = _run("train_tools_ppo", [*TINY, "--steps", "1", "--num-groups", "1", "--group-size", "2", "--n-eval", "2",
                                   "--max-new-tokens", "8"])
    assert _is_fraction(out["after"]) and "vf_loss" in out["train"]


@pytest.mark.slow  # ~30 s on 2 shared cores; run with -m slow
def test_train_device_gigpo_smoke() -> None:
    out = _run("train_device_gigpo", [*TINY, "--steps", "1", "--num-groups", "1", "--group-size", "2",
                                      "--expert-episodes", "2", "--sft-epochs", "1", "--n-eval", "2", "--max-new-tokens", "8"])
    assert _is_fraction(out["after"]) and out["train"]["steps"] == 1


def test_redteam_selfplay_smoke() -> None:
    out = _run("redteam_selfplay", [*TINY, "--steps", "1", "--num-groups", "1", "--group-size", "2", "--max-new-tokens", "8"])
    assert out["steps"] == 1
    assert any(k.endswith("pg_loss") for k in out["attacker"]) and any(k.endswith("pg_loss") for k in out["defender"])


def test_custom_env_train_smoke() -> None:
    out = _run("custom_env_train", [*TINY, "--steps", "1", "--num-groups", "1", "--group-size", "2",
                                    "--expert-episodes", "4", "--sft-epochs", "1", "--n-eval", "2"])
    assert _is_fraction(out["before"]) and out["train"]["steps"] == 1


def test_compare_credit_smoke() -> None:
    out = _run("compare_credit", [*TINY, "--estimators", "grpo,turn_return", "--seeds", "0,1", "--steps", "2",
                                  "--eval-every", "1", "--num-groups", "1", "--group-size", "2", "--expert-episodes", "4",
                                  "--sft-epochs", "1", "--n-eval", "2", "--induction-steps", "2"])
    assert set(out["table"]) == {"grpo", "turn_return"}
    assert [r["samples"] for r in out["table"]["grpo"]["curve"]] == [0, 2, 4]
    assert out["budget_episodes"] == 4 and _is_fraction(out["start"])
    assert all(r["sd"] >= 0 and _is_fraction(r["mean"]) for r in out["table"]["turn_return"]["curve"])
    assert all(len(row["episodes_to_threshold"]) == 2 and _is_fraction(row["auc_mean"]) for row in out["table"].values())
    assert all({"success", "reward", "turns", "invalid_frac", "tool_calls"} <= set(row["final"]) for row in out["table"].values())
    assert all(row["final"]["success"] == row["curve"][-1]["mean"] for row in out["table"].values())


def test_compare_credit_on_another_env_shares_one_warm_start(tmp_path) -> None:
    def run(estimator: str) -> dict:
        return _run("compare_credit", [
            *TINY, "--env", "creditgym/Tools-v0", "--env-kwargs", '{"difficulty": 1}', "--estimators", estimator,
            "--seeds", "0", "--steps", "1", "--eval-every", "1", "--num-groups", "1", "--group-size", "2",
            "--expert-episodes", "4", "--sft-epochs", "1", "--n-eval", "4", "--induction-steps", "2",
            "--json", str(tmp_path / f"{estimator}.json"), "--sft-dir", str(tmp_path / "sft")])  # fmt: skip

    out = run("pvd")
    assert out["env_id"] == "creditgym/Tools-v0" and out["env_kwargs"] == {"difficulty": 1}
    assert json.loads((tmp_path / "pvd.json").read_text())["table"]["pvd"]["reached"] in (0, 1)
    assert (tmp_path / "sft" / "config.json").exists()
    stamp = (tmp_path / "sft" / "config.json").stat().st_mtime_ns
    again = run("grpo")  # a second process loads the saved warm start: same start, nothing rewritten
    assert again["start"] == out["start"]
    assert (tmp_path / "sft" / "config.json").stat().st_mtime_ns == stamp
    # the two processes' reports make one study (no training)
    merged = _run("compare_credit", ["--merge", f"{tmp_path / 'pvd.json'},{tmp_path / 'grpo.json'}",
                                     "--json", str(tmp_path / "both.json")])  # fmt: skip
    assert set(merged["table"]) == {"pvd", "grpo"} and merged["start"] == out["start"]
    assert merged["table"]["grpo"]["by_seed"] == again["table"]["grpo"]["by_seed"]
    assert json.loads((tmp_path / "both.json").read_text())["table"].keys() == {"pvd", "grpo"}


def test_tools_warm_start_smoke(tmp_path: Path) -> None:
    out = _run("tools_warm_start", [*TINY, "--difficulty", "1", "--induction-steps", "2", "--expert-episodes", "2",
                                    "--sft-epochs", "1", "--more-episodes", "2", "--more-epochs", "1", "--rounds", "3",
                                    "--copy-steps", "1", "--pool-episodes", "3", "--round-episodes", "2", "--n-eval", "2",
                                    "--out", str(tmp_path / "warm")])  # fmt: skip
    assert (tmp_path / "warm" / "config.json").is_file() and out["out"] == str(tmp_path / "warm")
    assert _is_fraction(out["copy_accuracy"]) and _is_fraction(out["test_success"])
    assert -3.0 <= out["test_toolrl_reward"] <= 4.0  # ToolRL: format in {0, 1} plus correctness in [-3, 3]


@pytest.mark.slow
def test_train_search_smollm2_lora_smoke() -> None:
    out = _run("train_search_smollm2_lora", ["--steps", "1", "--num-groups", "1", "--group-size", "2", "--n-eval", "2",
                                             "--sft-episodes", "2", "--threads", "1", "--max-new-tokens", "16"])
    assert _is_fraction(out["after"])


def test_examples_have_a_docstring_and_main() -> None:
    for name in CONFIGS:
        text = (EXAMPLES / f"{name}.py").read_text()
        assert text.startswith('"""') and "def main(" in text and len(text.splitlines()) < 150, name
    assert os.path.isfile(EXAMPLES / "custom_env.py")


def test_train_search_flowrl_smoke() -> None:
    out = _run("train_search_flowrl", [*TINY, "--steps", "1", "--num-groups", "1", "--group-size", "2", "--expert-episodes", "4",
                                       "--sft-epochs", "1", "--induction-steps", "2", "--n-eval", "2", "--samples", "2",
                                       "--max-new-tokens", "8"])
    assert set(out["rows"]) == {"start", "pg", "flowrl"}
    assert all(_is_fraction(r["success"]) and 0 <= r["distinct_successes"] <= 2 for r in out["rows"].values())
    text = (EXAMPLES / "train_search_flowrl.py").read_text()
    assert text.startswith('"""') and "def main(" in text and len(text.splitlines()) < 150


def test_train_search_ttrl_smoke() -> None:
    out = _run("train_search_ttrl", [*TINY, "--steps", "1", "--num-groups", "1", "--group-size", "4",
                                     "--reward-transform-cfg", '{"ttrl": {"train": 2}}',  # 4 votes, 2 trained on
                                     "--expert-episodes", "4", "--sft-epochs", "1", "--n-eval", "2", "--eval-samples", "2",
                                     "--max-new-tokens", "16"])  # fmt: skip
    assert all(_is_fraction(out[k]["pass@1"]) and _is_fraction(out[k]["maj@2"]) for k in ("before", "after"))
    assert len(out["majority_ratio"]) == 1 and out["train"]["steps"] == 1 and out["train"]["episodes"] == 2.0


def test_train_search_ttrl_starts_from_a_saved_model(tmp_path) -> None:
    from creditgym.agents import tiny

    tiny.build(seed=0, config=tiny.TinyConfig(hidden_size=32, intermediate_size=96, num_layers=1, num_heads=4,
                                              num_kv_heads=2)).save(tmp_path / "sft")  # fmt: skip
    out = _run("train_search_ttrl", ["--sft-model", str(tmp_path / "sft"), "--steps", "1", "--num-groups", "1",
                                     "--group-size", "2", "--reward-transform-cfg", '{"ttrl": {"train": 2}}',
                                     "--expert-episodes", "0", "--n-eval", "1", "--eval-samples", "2",
                                     "--max-new-tokens", "8"])  # fmt: skip
    assert out["train"]["steps"] == 1 and _is_fraction(out["after"]["pass@1"])


def test_curriculum_sec_starts_from_a_saved_model(tmp_path) -> None:
    from creditgym.agents import tiny

    tiny.build(seed=0, config=tiny.TinyConfig(hidden_size=32, intermediate_size=96, num_layers=1, num_heads=4,
                                              num_kv_heads=2)).save(tmp_path / "sft")  # fmt: skip
    out = _run("curriculum_sec", ["--sft-model", str(tmp_path / "sft"), "--steps", "1", "--num-groups", "2",
                                  "--group-size", "2", "--n-eval", "1", "--max-new-tokens", "8"])  # fmt: skip
    assert set(out["held_out_success"]) == {"start", "uniform", "sec"}


def test_curriculum_sec_smoke() -> None:
    out = _run("curriculum_sec", [*TINY, "--steps", "1", "--num-groups", "2", "--group-size", "2", "--expert-episodes", "4",
                                  "--sft-epochs", "1", "--n-eval", "1", "--max-new-tokens", "16"])  # fmt: skip
    assert set(out["held_out_success"]) == {"start", "uniform", "sec"}
    assert all(_is_fraction(v) for row in out["held_out_success"].values() for v in row.values())
    assert len(out["sec_share_per_step"]) == 1 and sum(out["sec_share_per_step"][0].values()) == 1.0


def test_train_search_grpo_otc_smoke() -> None:
    out = _run("train_search_grpo", [*TINY, "--steps", "1", "--num-groups", "1", "--group-size", "2",
                                     "--expert-episodes", "4", "--sft-epochs", "1", "--n-eval", "2",
                                     "--reward-transforms", '["otc_grpo"]'])
    assert "reward/otc_grpo/mean_r_tool" in out["train"] and "tool_productivity" in out["tools"]["after"]
    assert out["tools"]["before"]["tool_calls"] >= 0.0


@pytest.mark.slow  # ~30 s on 2 shared cores; run with -m slow
def test_train_tools_ppo_otc_smoke() -> None:
    out = _run("train_tools_ppo", [*TINY, "--steps", "1", "--num-groups", "1", "--group-size", "2", "--n-eval", "2",
                                   "--max-new-tokens", "8", "--env-kwargs", '{"difficulty": 1, "otc": "ppo"}',
                                   "--reward-transforms", '["otc_grpo"]'])  # fmt: skip
    assert "reward/otc_grpo/mean_r_tool" in out["train"] and "tool_productivity" in out["tools"]["after"]


DEVICE_TINY = [*TINY, "--env-kwargs", '{"difficulty": 1, "max_turns": 2}', "--warm-episodes", "1", "--warm-epochs", "1", "--bc-epochs", "1", "--n-expert", "1", "--n-noisy", "2",
               "--n-random", "1", "--n-policy", "1", "--max-new-tokens", "6", "--n-eval", "1"]  # fmt: skip


def test_device_digirl_smoke(tmp_path: Path) -> None:
    out = _run("device_digirl", [*DEVICE_TINY, "--offline-iterations", "1", "--online-iterations", "1",
                                 "--episodes-per-iteration", "1", "--actor-steps", "1", "--out-dir", str(tmp_path)])  # fmt: skip
    assert set(out["held_out_success"]) == {"warm_start", "filtered_bc", "digirl_offline", "digirl_online"}
    assert all(_is_fraction(v) for v in out["held_out_success"].values()) and out["train"]["steps"] == 2
    assert (tmp_path / "offline.jsonl").is_file() and (tmp_path / "offline.manifest.json").is_file()
    assert (tmp_path / "warm_start" / "model" / "config.json").is_file()  # reusable: --sft-model


def test_device_digiq_smoke_from_a_saved_warm_start(tmp_path: Path) -> None:
    from creditgym.agents import tiny

    saved = tiny.build(seed=0, config=tiny.TinyConfig(hidden_size=32, intermediate_size=96, num_layers=1, num_heads=4,
                                                      num_kv_heads=2))  # fmt: skip
    saved.save(tmp_path / "sft")
    out = _run("device_digiq", [*DEVICE_TINY, "--critic-epochs", "1", "--actor-steps", "1", "--n-candidates", "2",
                                "--n-rank-episodes", "1", "--out-dir", str(tmp_path / "run"),
                                "--sft-model", str(tmp_path / "sft"), "--eval-temperature", "0"])  # fmt: skip
    assert not (tmp_path / "run" / "warm_start").exists()  # loaded, not made
    assert set(out["held_out_success"]) == {"warm_start", "filtered_bc", "digiq"} and out["eval_temperature"] == 0.0
    assert all(_is_fraction(v) for v in out["held_out_success"].values())
    assert _is_fraction(out["q_ranks_expert_above_random"])


def test_redteam_sema_smoke() -> None:
    out = _run("redteam_sema", [*TINY, "--warm-episodes", "4", "--warm-epochs", "1", "--n-generations", "2", "--goals", "1",
                                "--steps", "1", "--num-groups", "1", "--group-size", "2", "--max-new-tokens", "8", "--n-eval", "1"])
    for stage in ("warm_start", "after_self_tune", "after_rl"):
        assert set(out[stage]) == {"L0", "L1", "L2", "L3", "L4"}
        assert all(_is_fraction(float(v["success"])) and _is_fraction(float(v["format"])) for v in out[stage].values())
    assert out["rl"]["rl/steps"] == 1.0


# the examples that only play scripted policies (no training, no Config): one seed each
SCRIPTED = [pytest.param("device_expert", marks=pytest.mark.slow),  # ~1 min: difficulty 3's tasks build slowly
            "redteam_levels", "search_expert", "selfsearch_expert", "tools_expert"]  # fmt: skip


@pytest.mark.parametrize("name", SCRIPTED)
def test_scripted_example_runs(name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    module = _load(name)
    if hasattr(module, "Args"):  # main() reads its Args from the command line
        monkeypatch.setattr(sys, "argv", [name, "--seeds", "1"])
        module.main()
    else:  # main's own parameters are the flags
        tyro.cli(module.main, args=["--seeds", "1"])
    assert re.search(r"success|expert", capsys.readouterr().out)
