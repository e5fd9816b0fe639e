"""Imports run downward only (ARCHITECTURE.md, "Layers")."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "core": {"creditgym.envs", "creditgym.agents", "creditgym.credit", "creditgym.trainers"},
    "envs": {"creditgym.agents", "creditgym.credit", "creditgym.trainers"},
    "credit": {"creditgym.envs", "creditgym.agents", "creditgym.trainers"},
    "agents": {"creditgym.credit", "creditgym.trainers"},
    "trainers": set(),
}
# benchmarks/ (creditgym.benchmarks) is a top layer: no library layer imports it
for _forbidden in FORBIDDEN.values():
    _forbidden.add("creditgym.benchmarks")


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_downward_only(layer):
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        if layer == "core" and path.name == "cli.py":
            continue  # the CLI is the top layer even though it lives in core
        for mod in _imports(path):
            if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not bad, "\n".join(bad)
