"""Run untrusted Python with limits: bubblewrap, docker or a plain subprocess (ENVS.md section 3).

Every level: a fresh work dir, the code in `main.py`, `python -I main.py`, the environment cleared
but `PATH`, `PYTHONHASHSEED=0`, `LANG=C.UTF-8`, rlimits (`RLIMIT_AS`, `RLIMIT_CPU`, `RLIMIT_FSIZE`,
`RLIMIT_NOFILE`, `RLIMIT_CORE`), a wall timeout, output capped at 1 MB (the process is stopped when
it writes more) and decoded with `errors="replace"`. Processes are bounded by a per-run pids cgroup
where one is writable (RLIMIT_NPROC does not bind root), else by RLIMIT_NPROC; at the end of a run
every process left in the process group and the cgroup is killed.

Only `bwrap` and `docker` isolate network and filesystem. The `subprocess` fallback keeps the
resource limits and adds an audit hook that refuses sockets, subprocesses, exec and fork: it stops
casual use but is **not** a security boundary, and it reports `network_isolated: False`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from typing import Any, Protocol

from creditgym.envs.tools.process import (
    CLEAN_ENV,
    MAX_CAPTURE_BYTES,
    MAX_FILE_BYTES,
    MAX_FILES,
    PidsCgroup,
    RunResult,
    SandboxLimits,
    read_files,
    run_process,
    write_files,
)

BWRAP = "/usr/bin/bwrap"

__all__ = [
    "CLEAN_ENV",
    "MAX_CAPTURE_BYTES",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "BwrapSandbox",
    "PidsCgroup",
    "RunResult",
    "Sandbox",
    "SandboxLimits",
    "SubprocessSandbox",
    "bwrap_available",
    "make_sandbox",
    "read_files",
    "run_process",
    "write_files",
]

log = logging.getLogger(__name__)

# Preamble of the subprocess level: refuse sockets, subprocesses, exec and fork from Python.
# Not a security boundary (ctypes or a C extension walk around it), only a guard against casual use.
_GUARD = (
    "import sys as _s\n"
    "def _g(ev, args, _p=('socket.', 'subprocess.', 'os.exec', 'os.posix_spawn', 'os.spawn', 'os.fork',"
    " 'os.forkpty', 'os.system', 'pty.')):\n"
    "    if ev.startswith(_p):\n"
    "        raise PermissionError(f'sandbox: {ev} is not allowed')\n"
    "_s.addaudithook(_g)\n"
    "del _g, _s\n"
)
_RUN_MAIN = "exec(compile(open('main.py', encoding='utf-8').read(), 'main.py', 'exec'), {'__name__': '__main__'})\n"


class Sandbox(Protocol):
    level: str
    network_isolated: bool

    def run(self, code: str, files: Mapping[str, str] | None = None) -> RunResult: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- levels
class _LocalSandbox:
    """Shared by the subprocess and bwrap levels: temp dir, files in and out, one process run."""

    level = "local"
    network_isolated = False

    def __init__(self, limits: SandboxLimits | None = None):
        self.limits = limits or SandboxLimits()

    def _argv(self, workdir: str) -> list[str]:
        raise NotImplementedError

    def run(self, code: str, files: Mapping[str, str] | None = None) -> RunResult:
        workdir = tempfile.mkdtemp(prefix="creditgym-sbx-")
        try:
            os.chmod(workdir, 0o777)
            write_files(workdir, files or {})
            with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
                f.write(code)
            try:
                res = run_process(self._argv(workdir), workdir, self.limits)
            except OSError as e:  # could not start the process at all (e.g. out of pids on the host)
                log.warning("sandbox %s: run failed to start: %s", self.level, e)
                return RunResult("", f"sandbox failed to start the run: {e}", 126, stopped="crash")
            new_files, skipped = read_files(workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return RunResult(**{**res.to_json(), "files": new_files, "files_skipped": skipped})

    def info(self) -> dict[str, Any]:
        return {"level": self.level, "network_isolated": self.network_isolated}

    def close(self) -> None:
        return None


class SubprocessSandbox(_LocalSandbox):
    """The fallback: a plain subprocess with rlimits, a pids cgroup and an audit-hook guard.
    It isolates neither network nor filesystem (`network_isolated: False`)."""

    level = "subprocess"
    network_isolated = False

    def __init__(self, limits: SandboxLimits | None = None):
        super().__init__(limits)
        log.warning("sandbox level 'subprocess': resource limits only; it isolates neither network nor "
                    "filesystem and is not a security boundary (install bubblewrap for isolation)")

    def _argv(self, workdir: str) -> list[str]:
        # The guard runs first, then main.py as __main__ (tracebacks keep main.py's own line numbers).
        return [sys.executable, "-I", "-c", _GUARD + _RUN_MAIN]


def bwrap_available(path: str = BWRAP) -> tuple[bool, str]:
    """Probe `bwrap --ro-bind / / true`; (ok, reason when not)."""
    if not os.path.exists(path):
        return False, f"{path} not found: install bubblewrap (apt-get install bubblewrap)"
    try:
        p = subprocess.run([path, "--unshare-all", "--ro-bind", "/", "/", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"bwrap probe failed: {e}"
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip()
        return False, f"bwrap probe failed ({err}); unprivileged user namespaces may be disabled"
    return True, ""


class BwrapSandbox(_LocalSandbox):
    """bubblewrap: every namespace unshared (no network), read-only system binds, tmpfs /tmp, the work
    dir at /sandbox, uid 65534, all capabilities dropped, plus the rlimits and the pids cgroup."""

    level = "bwrap"
    network_isolated = True

    def __init__(self, limits: SandboxLimits | None = None, bwrap: str = BWRAP):
        ok, why = bwrap_available(bwrap)
        if not ok:
            raise RuntimeError(f"sandbox='bwrap' is not usable: {why}. Use sandbox='auto' to fall back.")
        super().__init__(limits)
        self.bwrap = bwrap

    def _argv(self, workdir: str) -> list[str]:
        argv = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session"]
        for p in ("/usr", "/bin", "/lib", "/lib64", "/etc"):
            argv += ["--ro-bind-try", p, p]
        # tmpfs /tmp first: a checkout (and its venv) may itself live under /tmp and must stay visible.
        argv += ["--tmpfs", "/tmp"]
        for p in sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix}):
            argv += ["--ro-bind-try", p, p]
        argv += ["--proc", "/proc", "--dev", "/dev", "--bind", workdir, "/sandbox",
                 "--chdir", "/sandbox", "--clearenv"]
        for k, v in CLEAN_ENV.items():
            argv += ["--setenv", k, v]
        argv += ["--uid", "65534", "--gid", "65534", "--cap-drop", "ALL", sys.executable, "-I", "main.py"]
        return argv


def docker_available(timeout_s: float = 2.0) -> bool:
    """Whether `docker.from_env().ping()` answers within `timeout_s` (False without the docker SDK)."""
    try:
        import docker
    except ImportError:
        return False
    try:
        return bool(docker.from_env(timeout=int(max(1, timeout_s))).ping())
    except Exception as e:  # any failure to reach a daemon means "no docker" for auto
        log.debug("docker not available: %s", e)
        return False


def make_sandbox(level: str = "auto", limits: SandboxLimits | None = None, docker_image: str = "python:3.11-slim",
                 docker_kwargs: Mapping[str, Any] | None = None) -> Any:
    """The sandbox for `level` in {'auto', 'bwrap', 'docker', 'subprocess'}.

    `auto` = bwrap if its probe passes, else docker if a daemon answers `ping()` in 2 s, else
    subprocess (logged: not a security boundary). An explicit level that cannot run raises with a hint.
    """
    if level == "auto":
        ok, why = bwrap_available()
        if ok:
            return BwrapSandbox(limits)
        log.info("sandbox auto: bwrap unavailable (%s)", why)
        if docker_available():
            from creditgym.envs.tools.docker_sandbox import DockerSandbox

            return DockerSandbox(limits, image=docker_image, **dict(docker_kwargs or {}))
        return SubprocessSandbox(limits)
    if level == "bwrap":
        return BwrapSandbox(limits)
    if level == "subprocess":
        return SubprocessSandbox(limits)
    if level == "docker":
        from creditgym.envs.tools.docker_sandbox import DockerSandbox

        return DockerSandbox(limits, image=docker_image, **dict(docker_kwargs or {}))
    raise ValueError(f"sandbox must be one of 'auto', 'bwrap', 'docker', 'subprocess'; got {level!r}")

