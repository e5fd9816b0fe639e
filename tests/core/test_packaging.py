"""pyproject lists every package folder (a strict editable install or a wheel drops unlisted ones)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CFG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
ROOTS = {folder: name for name, folder in CFG["package-dir"].items()}  # folder -> import name


def test_every_package_folder_is_listed():
    listed = set(CFG["packages"])
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "examples"}
    assert packages <= set(ROOTS), f"add to [tool.setuptools.package-dir]: {sorted(packages - set(ROOTS))}"
    assert {"core", "envs", "agents", "credit", "trainers", "cli", "benchmarks"} <= set(ROOTS)
    assert ROOTS["core"] == "creditgym" and all(name == f"creditgym.{f}" for f, name in ROOTS.items() if f != "core")
    found = set()
    for folder, name in ROOTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    # data folders (no __init__.py) are listed too, so setuptools ships them without a warning
    on_disk = {n for n in listed - found if (ROOT / _folder_of(n)).is_dir() and n.endswith(".data")}
    assert listed - found == on_disk, f"listed but missing on disk: {sorted(listed - found - on_disk)}"
    for name in on_disk:
        assert any((ROOT / _folder_of(name)).iterdir()), f"{name} is an empty data folder"


def _folder_of(name: str) -> Path:
    """The source folder of a dotted package name, through [tool.setuptools.package-dir]."""
    folder_of_root = {pkg: folder for folder, pkg in ROOTS.items()}
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        folder = folder_of_root.get(".".join(parts[:n]))
        if folder is not None:
            return Path(folder, *parts[n:])
    raise AssertionError(f"{name} is under no package-dir root")
