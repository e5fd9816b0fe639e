"""Shared scaffolding of the tests/agents modules.

pytest runs with --import-mode=importlib, so sibling helper files are not importable by name; this
conftest (loaded before the test modules) imports `rollout_fakes.py` once by path as the module
`creditgym_test_rollout_fakes`, and the tests write `import creditgym_test_rollout_fakes as F`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if "creditgym_test_rollout_fakes" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("creditgym_test_rollout_fakes", Path(__file__).with_name("rollout_fakes.py"))
    sys.modules[_spec.name] = _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
