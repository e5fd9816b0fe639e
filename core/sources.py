"""What users name on the command line: their own code (`path/to/file.py` or `module`), an env as
`ENV_ID`, `FILE.py:ENV_ID` or `module:ENV_ID`, and JSON objects such as env kwargs.

Shared by the CLI and the benchmarks (both top layers), so it lives in core. Errors are ValueErrors
that say what to pass; the CLI shows them as usage errors.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["import_env_source", "import_source", "json_object"]

_IMPORTED_FILES: dict[Path, ModuleType] = {}


def import_source(where: str) -> ModuleType:
    """Import `path/to/file.py` (once per process, cached by its resolved path) or a module by name."""
    if not (where.endswith(".py") or "/" in where or Path(where).is_file()):
        return importlib.import_module(where)
    path = Path(where).resolve()
    if not path.is_file():
        raise ValueError(f"no such file: {where}")
    if path not in _IMPORTED_FILES:
        name = f"_creditgym_user_{abs(hash(str(path))) & 0xFFFFFFFF:x}_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot import {where} as a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent))
        _IMPORTED_FILES[path] = module
    return _IMPORTED_FILES[path]


def import_env_source(source: str) -> str:
    """Resolve `ENV_ID`, `path/to/file.py:ENV_ID` or `module:ENV_ID`: import the file or module so its
    `register(...)` calls run, and return the id."""
    if ":" not in source:
        return source
    where, env_id = source.rsplit(":", 1)
    import_source(where)
    return env_id


def json_object(raw: str, flag: str = "--env-kwargs", example: str = '{"topk": 1}') -> dict[str, Any]:
    """Parse a command-line value that holds a JSON object (e.g. env kwargs), with an error naming the flag."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} must be a JSON object, e.g. '{example}': {e}") from e
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object, got {raw!r}")
    return value
