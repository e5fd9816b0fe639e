"""Shared scaffolding of the tests/benchmarks modules: the tiny-model cache and the helpers of the
sibling test folders (pytest runs with --import-mode=importlib, so they are put on the path or loaded
by path here, as tests/trainers/conftest.py and tests/agents/conftest.py do)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parents[1]
sys.path.insert(0, str(TESTS / "trainers"))  # `from _trainer_helpers import build_tiny`
if "creditgym_test_rollout_fakes" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("creditgym_test_rollout_fakes", TESTS / "agents" / "rollout_fakes.py")
    assert _spec is not None and _spec.loader is not None
    sys.modules[_spec.name] = _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return tmp_path_factory.mktemp("tiny_cache")
