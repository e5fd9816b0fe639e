"""The sandbox escape matrix (creditgym.envs.tools.escape) on every level this machine has: bwrap must
contain every attempt; the subprocess level must contain the resource attempts (it is not a
security boundary, docs/sandbox.md); docker skips with the reason where no engine runs."""

from __future__ import annotations

import os
import subprocess

import pytest

from creditgym.envs.tools import bwrap_available
from creditgym.envs.tools.escape import CASES, MATRIX_LIMITS, EscapeResult, escape_matrix, run_escape
from creditgym.envs.tools.sandbox import SubprocessSandbox, docker_available
from creditgym.envs.tools.sandbox import escape_matrix as escape_matrix_from_sandbox

BWRAP_OK, BWRAP_WHY = bwrap_available()
SYSTEM_PYTHON = "/usr/bin/python3"


def _nobody_python() -> bool:
    """Whether the system Python runs as uid 65534 (to test the subprocess level's drop from root)."""
    if os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON):
        return False
    p = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", SYSTEM_PYTHON, "-c", "pass"],
                       capture_output=True)
    return p.returncode == 0


@pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap unusable: {BWRAP_WHY}")
def test_bwrap_contains_every_escape_attempt() -> None:
    results = escape_matrix_from_sandbox("bwrap")
    assert [r.name for r in results] == list(CASES)
    escaped = [(r.name, r.detail) for r in results if r.contained is not True]
    assert escaped == []
    assert all(r.skipped == "" for r in results)


def test_subprocess_level_contains_the_resource_attempts() -> None:
    names = ["memory_4gb", "cpu_loop", "output_100mb", "disk_fill", "env_secrets"]
    results = escape_matrix("subprocess", cases=names)
    assert {r.name: r.contained for r in results} == dict.fromkeys(names, True), results


@pytest.mark.skipif(not _nobody_python(), reason="needs root and a system Python that uid 65534 can run")
def test_subprocess_level_as_root_drops_to_nobody() -> None:
    sb = SubprocessSandbox(MATRIX_LIMITS, python=SYSTEM_PYTHON)
    assert sb.run_as == (65534, 65534)
    res = run_escape(sb, "root_only_file")
    assert res.contained is True, "a root-only host file was readable at the subprocess level"
    r = sb.run("import os\nprint(os.getuid(), os.getgid(), os.getgroups())\n")
    assert r.stdout.split() == ["65534", "65534", "[]"]


def test_docker_level_skips_with_reason_without_an_engine() -> None:
    if docker_available():
        pytest.skip("a Docker engine answers here; the matrix runs for real (bench)")
    results = escape_matrix("docker", cases=["network", "cpu_loop"])
    assert [r.contained for r in results] == [None, None]
    assert all("unavailable" in r.skipped and "Docker" in r.skipped for r in results)


def test_unknown_case_raises_with_the_list() -> None:
    with pytest.raises(ValueError, match=r"unknown escape cases.*network"):
        escape_matrix("subprocess", cases=["teleport"])


def test_escape_result_is_plain_data() -> None:
    r = EscapeResult("network", True, "ok")
    assert (r.name, r.contained, r.detail, r.skipped) == ("network", True, "ok", "")


# Loads the sandbox modules from their files into a bare system Python (the venv's interpreter may
# not be reachable by uid 65534), then runs the matrix the way a non-root user would.
UNPRIVILEGED = """
import importlib.util, json, sys, types
for name in ["creditgym", "creditgym.envs", "creditgym.envs.tools"]:
    m = types.ModuleType(name); m.__path__ = []; sys.modules[name] = m
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec); sys.modules[name] = mod; spec.loader.exec_module(mod)
    return mod
for mod in ("process", "sandbox", "escape"):
    load("creditgym.envs.tools." + mod, {src!r} + "/" + mod + ".py")
sb = sys.modules["creditgym.envs.tools.sandbox"]
assert sb.run_as_uid() is None, "this check must run as a non-root user"
res = sys.modules["creditgym.envs.tools.escape"].escape_matrix("bwrap", cases={cases!r})
print(json.dumps({{r.name: r.contained for r in res}}))
"""


@pytest.mark.skipif(not (BWRAP_OK and _nobody_python()), reason="needs root, bwrap and a system Python for uid 65534")
def test_bwrap_unprivileged_mode_contains_escapes() -> None:
    import json
    import shutil
    import tempfile

    import creditgym.envs.tools.sandbox as sandbox_module

    cases = ["root_only_file", "write_outside", "tmp_fill", "disk_fill", "orphan_daemon", "env_secrets"]
    src = os.path.dirname(sandbox_module.__file__)
    src = os.path.dirname(os.path.realpath(os.path.join(src, "sandbox.py")))
    d = tempfile.mkdtemp(prefix="creditgym-test-")
    try:
        os.chmod(d, 0o755)
        script = os.path.join(d, "run.py")
        with open(script, "w") as f:
            f.write(UNPRIVILEGED.format(src=src, cases=cases))
        os.chmod(script, 0o644)
        p = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", SYSTEM_PYTHON, script],
                           capture_output=True, text=True, timeout=60, cwd=d, env={"PATH": "/usr/bin:/bin"})
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == dict.fromkeys(cases, True)
