"""Smoke tests: every training example runs end to end at a tiny budget."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TINY = ["--hidden", "32", "--layers", "1"]


@pytest.fixture(autouse=True)
def _cache(tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from creditgym.agents import tiny

    monkeypatch.setenv("CREDITGYM_CACHE", str(tiny_cache))
    # a tokenizer corpus from one env builds in seconds (byte-level BPE still covers every env's text)
    monkeypatch.setattr(tiny, "registered_env_ids", lambda: ["creditgym/SearchEasy-v0"])


def _run(name: str, args: list[str]) -> dict:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.main(args)


def _is_fraction(x: float) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0 and not math.isnan(x)


def test_train_search_grpo_smoke() -> None:
    out = _run("train_search_grpo", [*TINY, "--steps", "1", "--groups", "1", "--group-size", "2",
                                     "--expert-episodes", "4", "--sft-epochs", "1", "--n-eval", "2", "--dapo"])
    assert _is_fraction(out["before"]) and _is_fraction(out["after"]) and out["train"]["steps"] == 1


@pytest.mark.slow  # ~30 s on 2 shared cores; run with -m slow
def test_train_tools_ppo_smoke() -> None:
    out = _run("train_tools_ppo", [*TINY, "--steps", "1", "--groups", "1", "--group-size", "2", "--n-eval", "2",
                                   "--max-new-tokens", "8"])
    assert _is_fraction(out["after"]) and "vf_loss" in out["train"]


@pytest.mark.slow  # ~30 s on 2 shared cores; run with -m slow
def test_train_device_gigpo_smoke() -> None:
    out = _run("train_device_gigpo", [*TINY, "--steps", "1", "--groups", "1", "--group-size", "2",
                                      "--expert-episodes", "2", "--sft-epochs", "1", "--n-eval", "2", "--max-new-tokens", "8"])
    assert _is_fraction(out["after"]) and out["train"]["steps"] == 1


def test_redteam_selfplay_smoke() -> None:
    out = _run("redteam_selfplay", [*TINY, "--steps", "1", "--groups", "1", "--group-size", "2", "--max-new-tokens", "8"])
    assert out["steps"] == 1
    assert any(k.endswith("pg_loss") for k in out["attacker"]) and any(k.endswith("pg_loss") for k in out["defender"])


def test_custom_env_train_smoke() -> None:
    out = _run("custom_env_train", [*TINY, "--steps", "1", "--groups", "1", "--group-size", "2",
                                    "--expert-episodes", "4", "--sft-epochs", "1", "--n-eval", "2"])
    assert _is_fraction(out["before"]) and out["train"]["steps"] == 1


def test_compare_credit_smoke() -> None:
    out = _run("compare_credit", [*TINY, "--estimators", "grpo,turn_return", "--seeds", "0,1", "--steps", "2",
                                  "--eval-every", "1", "--groups", "1", "--group-size", "2", "--expert-episodes", "4",
                                  "--sft-epochs", "1", "--n-eval", "2", "--induction-steps", "2"])
    assert set(out["table"]) == {"grpo", "turn_return"}
    assert [r["samples"] for r in out["table"]["grpo"]] == [0, 2, 4]
    assert out["budget_episodes"] == 4 and _is_fraction(out["start_success"])
    assert all(r["sd"] >= 0 and _is_fraction(r["mean"]) for r in out["table"]["turn_return"])


@pytest.mark.slow
def test_train_search_smollm2_lora_smoke() -> None:
    out = _run("train_search_smollm2_lora", ["--steps", "1", "--groups", "1", "--group-size", "2", "--n-eval", "2",
                                             "--sft-episodes", "2", "--threads", "1", "--max-new-tokens", "16"])
    assert _is_fraction(out["after"])


def test_examples_have_a_docstring_and_main() -> None:
    for name in ("train_search_grpo", "train_tools_ppo", "train_device_gigpo", "redteam_selfplay",
                 "custom_env_train", "compare_credit", "train_search_smollm2_lora"):
        text = (EXAMPLES / f"{name}.py").read_text()
        assert text.startswith('"""') and "def main(" in text and len(text.splitlines()) < 150, name
    assert os.path.isfile(EXAMPLES / "custom_env.py")
