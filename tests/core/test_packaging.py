"""pyproject lists every package folder (a strict editable install or a wheel drops unlisted ones)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOTS = {"core": "creditgym", "envs": "creditgym.envs", "agents": "creditgym.agents",
         "credit": "creditgym.credit", "trainers": "creditgym.trainers"}


def test_every_package_folder_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    assert cfg["package-dir"] == {v: k for k, v in ROOTS.items()}
    found = set()
    for folder, name in ROOTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed <= found, f"listed but missing on disk: {sorted(listed - found)}"
