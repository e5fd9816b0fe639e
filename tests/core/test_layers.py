"""The import graph follows ARCHITECTURE.md "Layers":

    core <- envs, credit;  envs <- agents;  agents, credit <- trainers <- cli, viewer, benchmarks, examples

plus two hygiene rules the layering relies on: no private name (`_x`) is imported from another
creditgym module, and every built-in env id is written in exactly one library module (everything
else uses the family's constant).
"""

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP = {"creditgym.cli", "creditgym.viewer", "creditgym.benchmarks", "creditgym.integrations"}
LIBRARY = {"core": "creditgym", "envs": "creditgym.envs", "credit": "creditgym.credit", "agents": "creditgym.agents",
           "trainers": "creditgym.trainers"}
# folder -> creditgym packages it must not import
FORBIDDEN: dict[str, set[str]] = {
    "core": {"creditgym.envs", "creditgym.agents", "creditgym.credit", "creditgym.trainers"} | TOP,
    "envs": {"creditgym.agents", "creditgym.credit", "creditgym.trainers"} | TOP,
    "credit": {"creditgym.envs", "creditgym.agents", "creditgym.trainers"} | TOP,
    "agents": {"creditgym.credit", "creditgym.trainers"} | TOP,
    "trainers": set(TOP),
    # the top layers may import the library and each other's public API, but nothing imports the CLI
    "viewer": {"creditgym.cli", "creditgym.benchmarks"},
    "benchmarks": {"creditgym.cli"},
    "examples": {"creditgym.cli"},
}
ENV_ID = re.compile(r"creditgym/[A-Za-z]+-v\d+")


# `python -m creditgym` launches the CLI: a program entry point, never imported by the library
ENTRY_POINTS = {ROOT / "core" / "__main__.py"}
# `creditgym.view(episodes)` (issue 21's notebook spelling): core's lazy module `__getattr__` imports the
# viewer on first use only, so `import creditgym` never loads it (checked below)
LAZY_UPWARD = {("core/__init__.py", "creditgym.viewer")}


def _py_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts and p not in ENTRY_POINTS)


def _imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every absolute import, at any depth."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
    return out


def _under(module: str, packages: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layer_imports_downward_only(folder):
    bad = [
        f"{path.relative_to(ROOT)} imports {mod}"
        for path in _py_files(folder)
        for mod, names in _imports(ast.parse(path.read_text()))
        for target in [mod, *(f"{mod}.{n}" for n in names)]
        if _under(target, FORBIDDEN[folder]) and (str(path.relative_to(ROOT)), mod) not in LAZY_UPWARD
    ]
    assert not bad, "imports against the layers (ARCHITECTURE.md 'Layers'):\n" + "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("folder", sorted(set(FORBIDDEN) - {"examples"}) + ["cli"])
def test_no_private_name_imported_across_modules(folder):
    bad = [
        f"{path.relative_to(ROOT)}: from {mod} import {name}"
        for path in _py_files(folder)
        for mod, names in _imports(ast.parse(path.read_text()))
        if mod.startswith("creditgym")
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not bad, "private names imported from another module (make them public or move them):\n" + "\n".join(bad)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_each_env_id_written_in_one_library_module():
    where: dict[str, set[str]] = defaultdict(set)
    for folder in [*LIBRARY, "cli", "viewer"]:
        for path in _py_files(folder):
            tree = ast.parse(path.read_text())
            docs = _docstring_nodes(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                    for env_id in ENV_ID.findall(node.value):
                        where[env_id].add(str(path.relative_to(ROOT)))
    assert where, "found no env ids at all: the scan is broken"
    twice = {k: sorted(v) for k, v in where.items() if len(v) > 1}
    assert not twice, f"env ids written in more than one library module (use the family's constant): {twice}"


def test_creditgym_view_is_lazy():
    """`import creditgym` does not load the viewer; `creditgym.view` resolves to it."""
    import subprocess
    import sys

    code = "import sys, creditgym; a = 'creditgym.viewer' in sys.modules; v = creditgym.view; print(a, v.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "creditgym.viewer.report"]


def test_the_rules_catch_violations(tmp_path):
    """The scanners above flag what they should (so a green run means something)."""
    tree = ast.parse("from creditgym.trainers.grpo import GRPOTrainer\nfrom creditgym.credit.ops import _z\n")
    mods = _imports(tree)
    assert any(_under(m, FORBIDDEN["agents"]) for m, _ in mods)
    assert any(n.startswith("_") for _, names in mods for n in names)
    tree = ast.parse('"""Docs naming creditgym/Search-v0."""\nX = "creditgym/Search-v0"\n')
    docs = _docstring_nodes(tree)
    found = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docs]
    assert found == ["creditgym/Search-v0"]
