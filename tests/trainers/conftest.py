from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return tmp_path_factory.mktemp("tiny_cache")


@pytest.fixture
def tiny_policy(tiny_cache: Path):
    from _trainer_helpers import build_tiny

    return build_tiny(tiny_cache)
