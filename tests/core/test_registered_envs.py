"""Every registered creditgym env passes the checker (each family is checked the day it lands)."""

import gymnasium
import pytest

import creditgym
from creditgym.registry import entry_point_string

from ._envs import load_custom_env_example, load_gymnasium_example

load_custom_env_example()
REGISTERED = sorted(e for e in gymnasium.registry if e.startswith("creditgym/")) + ["GuessNumber-v0", load_gymnasium_example().ENV_ID]


@pytest.mark.parametrize("env_id", REGISTERED)
def test_registered_env_passes_checker(env_id):
    report = creditgym.check_env(env_id, n_seeds=4, n_fuzz=32, strict=False)
    assert report.ok, str(report)


def test_builtin_ids_match_the_design_table():
    builtin = {e for e, spec in gymnasium.registry.items() if entry_point_string(spec.entry_point).startswith("creditgym.envs.")}
    assert builtin == {
        "creditgym/Search-v0", "creditgym/SearchEasy-v0", "creditgym/SelfSearch-v0", "creditgym/SimSearch-v0",
        "creditgym/Tools-v0", "creditgym/ToolsPython-v0", "creditgym/Device-v0", "creditgym/RedTeam-v0",
        "creditgym/RedTeamDefender-v0", "creditgym/RedTeamSelfPlay-v0",
    }


def test_difficulty_presets_per_family():
    from creditgym.envs import difficulty_presets

    search = {"easy": {"hops": [1, 1], "distractors": 0}, "medium": {"hops": [2, 2]}, "hard": {"hops": [3, 3]}}
    levels = {"easy": {"difficulty": 1}, "medium": {"difficulty": 2}, "hard": {"difficulty": 3}}
    assert difficulty_presets("creditgym/Search-v0") == difficulty_presets("creditgym/SearchEasy-v0") == search
    assert difficulty_presets("creditgym/SelfSearch-v0") == {"easy": {"hops": [1, 1]}, "medium": {"hops": [2, 2]}, "hard": {"hops": [3, 3]}}
    assert difficulty_presets("creditgym/Tools-v0") == difficulty_presets("creditgym/ToolsPython-v0") == levels
    assert difficulty_presets("creditgym/Device-v0") == levels
    with pytest.raises(ValueError, match=r"no difficulty presets for creditgym/RedTeam-v0; known: \[.*creditgym/Device-v0"):
        difficulty_presets("creditgym/RedTeam-v0")


def test_each_builtin_env_id_is_written_in_one_library_module():
    """Outside docstrings, an env id string appears in one library module (its family's __init__);
    other code imports the family's constant."""
    import ast
    import re
    from pathlib import Path

    root, pattern = Path(__file__).resolve().parents[2], re.compile(r"creditgym/[A-Za-z]+-v\d+")
    where: dict[str, set[str]] = {}
    for layer in ("core", "envs", "agents", "credit", "trainers"):
        for path in (root / layer).rglob("*.py"):
            tree = ast.parse(path.read_text())
            docstrings = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef)
                          and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                    for env_id in pattern.findall(node.value):
                        where.setdefault(env_id, set()).add(str(path.relative_to(root)))
    assert {e: m for e, m in where.items() if len(m) > 1} == {}
    assert where["creditgym/SearchEasy-v0"] == {"envs/search/__init__.py"}
