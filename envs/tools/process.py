"""One limited process run, shared by the subprocess and bwrap sandbox levels (ENVS.md section 3).

`run_process` starts the command in its own session under rlimits (`RLIMIT_AS`, `RLIMIT_CPU`,
`RLIMIT_FSIZE`, `RLIMIT_NOFILE`, `RLIMIT_CORE`) and a per-run pids cgroup (RLIMIT_NPROC does not bind
root), enforces the wall timeout and the 1 MB output cap, and at the end kills whatever is left in
the process group and the cgroup.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import selectors
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "CLEAN_ENV",
    "MAX_CAPTURE_BYTES",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "PidsCgroup",
    "RunResult",
    "SandboxLimits",
    "read_files",
    "run_process",
    "write_files",
]

log = logging.getLogger(__name__)

MAX_CAPTURE_BYTES = 1_000_000  # stdout + stderr kept per run; more stops the process
MAX_FILES = 64
MAX_FILE_BYTES = 1_000_000
FSIZE_BYTES = 10_000_000
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}

@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. `pids` bounds processes (cgroup `pids.max`, or RLIMIT_NPROC for non-root)."""

    timeout_s: float = 5.0
    memory_mb: int = 512
    pids: int = 64
    max_capture_bytes: int = MAX_CAPTURE_BYTES


@dataclass(frozen=True)
class RunResult:
    """What one run produced. `exit_code` is 128 + signal for a killed process (shell convention);
    `stopped` says why the sandbox stopped it (`"timeout"`, `"cpu_limit"`, `"output_limit"`) or is ''."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    output_truncated: bool = False
    stopped: str = ""
    files: dict[str, str] | None = None
    files_skipped: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["files_skipped"] = list(self.files_skipped)
        return d


# --------------------------------------------------------------------------- pids cgroup
class PidsCgroup:
    """A per-run pids cgroup (v1 `pids` controller or v2 with `pids` enabled), or None if unwritable."""

    def __init__(self, path: str, max_pids: int):
        self.path = path
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write(str(max_pids))
        self._procs_fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY)

    @staticmethod
    def _roots() -> list[str]:
        roots = []
        if os.path.isfile("/sys/fs/cgroup/pids/cgroup.procs"):
            roots.append("/sys/fs/cgroup/pids")
        try:
            with open("/proc/self/cgroup") as f:
                own = [ln.split(":", 2)[2].strip() for ln in f if ln.startswith("0::")]
        except OSError:
            own = []
        for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
            ctl = os.path.join(mount, "cgroup.controllers")
            if own and os.path.isfile(ctl):
                base = os.path.join(mount, own[0].lstrip("/"))
                try:
                    with open(os.path.join(base, "cgroup.subtree_control")) as f:
                        if "pids" in f.read().split():
                            roots.append(base)
                except OSError:
                    pass
        return roots

    @classmethod
    def create(cls, max_pids: int) -> PidsCgroup | None:
        for root in cls._roots():
            path = os.path.join(root, f"creditgym-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                os.mkdir(path)
            except OSError:
                continue
            try:
                return cls(path, max_pids)
            except OSError:
                _rmdir_quiet(path)
        return None

    def join_fn(self) -> Callable[[], None]:
        """Runs in the child between fork and exec: move the child into this cgroup."""
        fd = self._procs_fd

        def join() -> None:
            os.write(fd, b"0")

        return join

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def kill_all(self, rounds: int = 200) -> None:
        """SIGKILL everything in the cgroup until it is empty (forks racing the kill are caught next round)."""
        for _ in range(rounds):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.005)
        log.warning("pids cgroup %s still holds processes %s after kill", self.path, self.pids())

    def close(self) -> None:
        self.kill_all()
        os.close(self._procs_fd)
        for _ in range(100):
            if _rmdir_quiet(self.path):
                return
            time.sleep(0.01)


def _rmdir_quiet(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


_CGROUP_WARNED = False


def _cgroup_or_none(max_pids: int) -> PidsCgroup | None:
    global _CGROUP_WARNED
    cg = PidsCgroup.create(max_pids)
    if cg is None and not _CGROUP_WARNED:
        _CGROUP_WARNED = True
        how = "RLIMIT_NPROC" if os.geteuid() != 0 else "nothing (RLIMIT_NPROC does not bind root)"
        log.warning("no writable pids cgroup: processes are bounded by %s", how)
    return cg


# --------------------------------------------------------------------------- files
def _safe_rel(path: str) -> str | None:
    parts = path.replace("\\", "/").split("/")
    if path.startswith("/") or not path or any(p in ("", ".", "..") for p in parts):
        return None
    return "/".join(parts)


def write_files(workdir: str, files: Mapping[str, str]) -> None:
    for name, content in files.items():
        rel = _safe_rel(name)
        if rel is None or rel == "main.py":
            continue
        full = os.path.join(workdir, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8", errors="replace") as f:
            f.write(content)


def read_files(workdir: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """Regular files of the work dir (not main.py, no links), at most 64 of at most 1 MB each."""
    out: dict[str, str] = {}
    skipped: list[str] = []
    for root, dirs, names in os.walk(workdir, followlinks=False):
        dirs.sort()
        for n in sorted(names):
            full = os.path.join(root, n)
            rel = os.path.relpath(full, workdir).replace(os.sep, "/")
            if rel == "main.py" or rel.startswith("__pycache__"):
                continue
            if os.path.islink(full) or not os.path.isfile(full):
                skipped.append(rel)
                continue
            if len(out) >= MAX_FILES or os.path.getsize(full) > MAX_FILE_BYTES:
                skipped.append(rel)
                continue
            with open(full, "rb") as f:
                out[rel] = f.read().decode("utf-8", errors="replace")
    return out, tuple(skipped)


# --------------------------------------------------------------------------- one process run
def _preexec(limits: SandboxLimits, cgroup: PidsCgroup | None) -> Callable[[], None]:
    join = cgroup.join_fn() if cgroup is not None else None
    cpu = math.ceil(limits.timeout_s) + 1
    mem = int(limits.memory_mb) * 1024 * 1024
    nproc = os.geteuid() != 0 and cgroup is None

    def fn() -> None:
        if join is not None:
            join()
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_BYTES, FSIZE_BYTES))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if nproc:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.pids, limits.pids))

    return fn


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_process(argv: list[str], cwd: str, limits: SandboxLimits) -> RunResult:
    """Run `argv` in its own session under the rlimits and a pids cgroup; enforce wall time and the
    output cap; kill the process group and the cgroup at the end, whatever happened."""
    cgroup = _cgroup_or_none(limits.pids)
    t0 = time.monotonic()
    deadline = t0 + limits.timeout_s
    bufs: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
    stopped = ""
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=dict(CLEAN_ENV), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_preexec(limits, cgroup), close_fds=True,
        )
        try:
            stopped = _pump(proc, bufs, deadline, limits.max_capture_bytes)
        finally:
            _kill_group(proc.pid)
            if cgroup is not None:
                cgroup.kill_all()
            proc.wait()
            _drain(proc, bufs, limits.max_capture_bytes)
    finally:
        if cgroup is not None:
            cgroup.close()
    rc = proc.returncode
    code = 128 - rc if rc < 0 else rc
    # RLIMIT_CPU sends SIGXCPU at the soft and SIGKILL at the hard limit (bwrap reports 128 + signal).
    if not stopped and code in (128 + signal.SIGXCPU, 128 + signal.SIGKILL):
        stopped = "cpu_limit"
    total = len(bufs["stdout"]) + len(bufs["stderr"])
    return RunResult(
        stdout=bytes(bufs["stdout"]).decode("utf-8", errors="replace"),
        stderr=bytes(bufs["stderr"]).decode("utf-8", errors="replace"),
        exit_code=code,
        timed_out=stopped in ("timeout", "cpu_limit"),
        output_truncated=stopped == "output_limit" or total >= limits.max_capture_bytes,
        stopped=stopped,
    )


def _pump(proc: subprocess.Popen, bufs: dict[str, bytearray], deadline: float, cap: int) -> str:
    """Read both pipes until the process exits; return why it was stopped ('' if it finished)."""
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            for key, _ in sel.select(timeout=min(left, 0.25)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.data]
                room = cap - len(bufs["stdout"]) - len(bufs["stderr"])
                buf += chunk[: max(room, 0)]
                if len(chunk) > room:
                    return "output_limit"
            if proc.poll() is not None and not sel.select(timeout=0):
                # The main process is gone; leftover children may hold the pipes open.
                return ""
        left = max(deadline - time.monotonic(), 0.0)
        try:
            proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            return "timeout"
        return ""
    finally:
        sel.close()


def _drain(proc: subprocess.Popen, bufs: dict[str, bytearray], cap: int) -> None:
    """After the kill: read what is left in the pipes (bounded), then close them."""
    for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        if pipe is None:
            continue
        os.set_blocking(pipe.fileno(), False)
        try:
            while len(bufs["stdout"]) + len(bufs["stderr"]) < cap:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                bufs[name] += chunk[: cap - len(bufs["stdout"]) - len(bufs["stderr"])]
        except (BlockingIOError, OSError, ValueError):
            pass
        pipe.close()
