"""One limited process run, shared by the subprocess and bwrap sandbox levels (ENVS.md section 3, docs/sandbox.md).

`run_process` starts the command in its own session under rlimits (`RLIMIT_AS`, `RLIMIT_CPU`,
`RLIMIT_FSIZE`, `RLIMIT_NOFILE`, `RLIMIT_CORE`), `PR_SET_NO_NEW_PRIVS` and a per-run pids cgroup
(RLIMIT_NPROC does not bind root), optionally as an unprivileged host uid (`run_as`, used when the
host process is root: uid 0 must never run sandboxed code), enforces the wall timeout, the 1 MB
output cap and (`watch_dir`) a total-size cap on a host work dir, and at the end kills whatever is
left in the process group and the cgroup.
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
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "CLEAN_ENV",
    "NOBODY",
    "drop_to",
    "SideChannel",
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
NOBODY = (65534, 65534)  # (uid, gid) sandboxed code runs as when the host process is root
MAX_WORK_ENTRIES = 10_000  # files + dirs a host work dir may hold (subprocess level's watch)
WATCH_INTERVAL_S = 0.005  # at ~1 GB/s of tmpfs writes, 20 ms let a fill pass a small cap by the matrix slack

@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. `pids` bounds processes (cgroup `pids.max`, or RLIMIT_NPROC for non-root).
    `disk_mb` caps the work dir and `tmp_mb` the sandbox's `/tmp` (how strictly depends on the level:
    docs/sandbox.md)."""

    timeout_s: float = 5.0
    memory_mb: int = 512
    pids: int = 64
    max_capture_bytes: int = MAX_CAPTURE_BYTES
    disk_mb: int = 64
    tmp_mb: int = 64

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be a finite number > 0, got {self.timeout_s!r}")
        for name in ("memory_mb", "pids", "max_capture_bytes", "disk_mb", "tmp_mb"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


@dataclass
class SideChannel:
    """A pipe the sandboxed runner writes its result files into (bwrap level); read with a byte cap.
    `write_fd` goes to the child (pass_fds), `read_fd` stays with the host."""

    read_fd: int
    write_fd: int
    cap: int
    data: bytearray = field(default_factory=bytearray)
    overflow: bool = False

    @classmethod
    def open(cls, cap: int) -> SideChannel:
        r, w = os.pipe()
        return cls(r, w, cap)

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        self.data += chunk[: max(room, 0)]
        self.overflow = self.overflow or len(chunk) > room


@dataclass(frozen=True)
class RunResult:
    """What one run produced. `exit_code` is 128 + signal for a killed process (shell convention);
    `stopped` says why the sandbox stopped it (`"timeout"`, `"cpu_limit"`, `"output_limit"`,
    `"disk_limit"`, `"crash"`) or is ''."""

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
    """`path` as a clean relative path, or None when it cannot be a file name on the host: absolute,
    empty parts, `.`/`..`, NUL or other control characters, lone surrogates, a part over 255 bytes."""
    parts = path.replace("\\", "/").split("/")
    if path.startswith("/") or not path or any(p in ("", ".", "..") for p in parts):
        return None
    if any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in path):
        return None
    if any(len(p.encode("utf-8")) > 255 for p in parts):
        return None
    return "/".join(parts)


def text_name(name: str | bytes) -> str:
    """A host file name as valid UTF-8 text: undecodable bytes (and the lone surrogates that
    `os.walk` makes of them) become U+FFFD, so a listing never breaks an observation."""
    raw = name if isinstance(name, bytes) else os.fsencode(name)
    return raw.decode("utf-8", errors="replace")


def write_files(workdir: str, files: Mapping[str, str]) -> list[str]:
    """Write the store's files into `workdir`; return the names that could not be written (a bad
    name, a file/directory clash, no space) instead of raising, so one bad entry never stops a run."""
    failed: list[str] = []
    for name, content in files.items():
        rel = _safe_rel(name)
        if rel is None or rel == "main.py":
            failed.append(name)
            continue
        full = os.path.join(workdir, rel)
        try:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w", encoding="utf-8", errors="replace") as f:
                f.write(content)
        except (OSError, ValueError) as e:
            log.debug("sandbox: could not write %r into the work dir: %s", name, e)
            failed.append(name)
    return failed


def read_files(workdir: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """Regular files of the work dir (not main.py, no links), at most 64 of at most 1 MB each.
    Names and contents are decoded as UTF-8 with errors replaced."""
    out: dict[str, str] = {}
    skipped: list[str] = []
    for root, dirs, names in os.walk(workdir, followlinks=False):
        dirs.sort()
        for n in sorted(names):
            full = os.path.join(root, n)
            rel = text_name(os.path.relpath(full, workdir).replace(os.sep, "/"))
            if rel == "main.py" or rel.startswith("__pycache__"):
                continue
            if os.path.islink(full) or not os.path.isfile(full):
                skipped.append(rel)
                continue
            if len(out) >= MAX_FILES or os.path.getsize(full) > MAX_FILE_BYTES:
                skipped.append(rel)
                continue
            try:
                with open(full, "rb") as f:
                    out[rel] = f.read(MAX_FILE_BYTES + 1)[:MAX_FILE_BYTES].decode("utf-8", errors="replace")
            except OSError:
                skipped.append(rel)
    return out, tuple(skipped)


def tree_usage(path: str, stop_bytes: int | None = None) -> tuple[int, int]:
    """(bytes allocated on disk, entries) under `path`, without following links; stops counting
    early once `stop_bytes` is passed. Allocated blocks, not sizes: a sparse file costs what it uses."""
    total = entries = 0
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                entries += 1
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_blocks * 512
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                if stop_bytes is not None and total > stop_bytes:
                    return total, entries
    return total, entries


# --------------------------------------------------------------------------- one process run
_PR_SET_NO_NEW_PRIVS = 38


def _prctl(option: int, value: int) -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def drop_to(uid: int, gid: int) -> None:
    """In a child about to exec: become `uid`/`gid` with no supplementary groups (all three ids, so no
    way back; capabilities go with uid 0)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def _preexec(limits: SandboxLimits, cgroup: PidsCgroup | None, run_as: tuple[int, int] | None) -> Callable[[], None]:
    join = cgroup.join_fn() if cgroup is not None else None
    cpu = math.ceil(limits.timeout_s) + 1
    mem = int(limits.memory_mb) * 1024 * 1024
    # RLIMIT_NPROC binds every uid but root (so the sandbox uid below root's bwrap); it counts all
    # processes of that uid on the host.
    nproc = cgroup is None

    def fn() -> None:
        if join is not None:
            join()  # before dropping privileges: cgroup.procs belongs to root
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_BYTES, FSIZE_BYTES))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if nproc:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.pids, limits.pids))
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        if run_as is not None:
            drop_to(*run_as)

    return fn


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_process(argv: list[str], cwd: str, limits: SandboxLimits, *, run_as: tuple[int, int] | None = None,
                side: SideChannel | None = None, watch_dir: str | None = None) -> RunResult:
    """Run `argv` in its own session under the rlimits and a pids cgroup; enforce wall time and the
    output cap; kill the process group and the cgroup at the end, whatever happened.

    `run_as` = (uid, gid) to drop to before exec; `side` = an extra pipe the child writes into (read
    with its own cap); `watch_dir` = a host dir whose total allocated size is checked every 5 ms and
    after the run: past `limits.disk_mb` MB (or MAX_WORK_ENTRIES entries) the run is stopped with
    `stopped="disk_limit"`."""
    cgroup = _cgroup_or_none(limits.pids)
    t0 = time.monotonic()
    deadline = t0 + limits.timeout_s
    bufs: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
    stopped = ""
    disk_cap = int(limits.disk_mb) * 1024 * 1024
    try:
        try:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=dict(CLEAN_ENV), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_preexec(limits, cgroup, run_as),
                close_fds=True, pass_fds=(side.write_fd,) if side is not None else (),
            )
        finally:
            if side is not None:
                os.close(side.write_fd)
        try:
            watch = (lambda: _over_disk(watch_dir, disk_cap)) if watch_dir is not None else None
            stopped = _pump(proc, bufs, deadline, limits.max_capture_bytes, side, watch)
            if not stopped and watch is not None and watch():
                stopped = "disk_limit"
        finally:
            _kill_group(proc.pid)
            if cgroup is not None:
                cgroup.kill_all()
            proc.wait()
            _drain(proc, bufs, limits.max_capture_bytes, side)
    finally:
        if cgroup is not None:
            cgroup.close()
        if side is not None:
            os.close(side.read_fd)
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


def _over_disk(path: str, cap: int) -> bool:
    used, entries = tree_usage(path, stop_bytes=cap)
    return used > cap or entries > MAX_WORK_ENTRIES


def _pump(proc: subprocess.Popen, bufs: dict[str, bytearray], deadline: float, cap: int,
          side: SideChannel | None = None, watch: Callable[[], bool] | None = None) -> str:
    """Read the pipes until the process exits; return why it was stopped ('' if it finished)."""
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    if side is not None:
        sel.register(side.read_fd, selectors.EVENT_READ, "side")
    next_watch = time.monotonic() + WATCH_INTERVAL_S
    try:
        while sel.get_map():
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                return "timeout"
            if watch is not None and now >= next_watch:
                if watch():
                    return "disk_limit"
                next_watch = now + WATCH_INTERVAL_S
            wait = min(left, 0.25 if watch is None else WATCH_INTERVAL_S)
            for key, _ in sel.select(timeout=wait):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                if key.data == "side":
                    assert side is not None
                    side.feed(chunk)
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


def _drain(proc: subprocess.Popen, bufs: dict[str, bytearray], cap: int, side: SideChannel | None = None) -> None:
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
    if side is not None:
        os.set_blocking(side.read_fd, False)
        try:
            while not side.overflow:
                chunk = os.read(side.read_fd, 65536)
                if not chunk:
                    break
                side.feed(chunk)
        except (BlockingIOError, OSError):
            pass
