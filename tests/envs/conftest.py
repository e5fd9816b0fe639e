"""Shared scaffolding of the tests/envs modules.

pytest runs with --import-mode=importlib, so sibling helper files are not importable by name; this
conftest (loaded before the test modules) imports `_fake_servers_search.py` (the fake HTTP backends of
the search, self-search and red-team tests) once by path, and the tests write `import _fake_servers_search as fs`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if "_fake_servers_search" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("_fake_servers_search", Path(__file__).with_name("_fake_servers_search.py"))
    sys.modules[_spec.name] = _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
