"""Run untrusted Python with limits: bubblewrap, docker or a plain subprocess (ENVS.md section 3,
docs/sandbox.md says what each level guarantees and what it does not).

Every level: a fresh work dir, the code in `main.py`, `python -I main.py`, the environment cleared
but `PATH`, `PYTHONHASHSEED=0`, `LANG=C.UTF-8`, rlimits (`RLIMIT_AS`, `RLIMIT_CPU`, `RLIMIT_FSIZE`,
`RLIMIT_NOFILE`, `RLIMIT_CORE`), a wall timeout, output capped at 1 MB (the process is stopped when
it writes more) and decoded with `errors="replace"`. Processes are bounded by a per-run pids cgroup
where one is writable (RLIMIT_NPROC does not bind root), else by RLIMIT_NPROC; at the end of a run
every process left in the process group and the cgroup is killed. When the host process is root,
the local levels drop to uid/gid 65534 before exec (bwrap then runs unprivileged, in a user
namespace), so sandboxed code never holds host root's file access.

Only `bwrap` and `docker` isolate network and filesystem. Under bwrap the work dir and `/tmp` are
size-capped tmpfs mounts inside the sandbox: a small runner copies the files in, runs `main.py`,
kills what it left behind and streams the result files back through a pipe. The `subprocess`
fallback keeps the resource limits, watches the work dir's size, and adds an audit hook that refuses
sockets, subprocesses, exec and fork: it stops casual use but is **not** a security boundary, and it
reports `network_isolated: False`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import struct
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
    NOBODY,
    PidsCgroup,
    RunResult,
    SandboxLimits,
    SideChannel,
    drop_to,
    read_files,
    run_process,
    text_name,
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
    "escape_matrix",
    "make_sandbox",
    "run_as_uid",
    "read_files",
    "run_process",
    "write_files",
]

log = logging.getLogger(__name__)

# Preamble of the subprocess level: refuse sockets, subprocesses, exec, fork and kill from Python.
# Not a security boundary (ctypes or a C extension walk around it), only a guard against casual use.
_GUARD = (
    "import sys as _s\n"
    "def _g(ev, args, _p=('socket.', 'subprocess.', 'os.exec', 'os.posix_spawn', 'os.spawn', 'os.fork',"
    " 'os.forkpty', 'os.system', 'os.kill', 'pty.')):\n"
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


# Runs inside bwrap as the sandbox uid: copy the inputs into the tmpfs work dir, run main.py under the
# timeout, kill whatever it left behind, then stream the work dir's files to the host through a pipe
# (records: b"F" name data, b"S" name (skipped), b"E" exit code + timed-out flag). The host reads the
# pipe with a byte cap and parses it as untrusted input.
_RUNNER = """\
import os, signal, shutil, struct, sys, time
IN, WORK = "/.sandbox-in/work", "/sandbox"
fd, timeout, max_files, max_bytes, uid = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
os.set_inheritable(fd, False)


def child():
    if uid >= 0:  # the host is root: bwrap ran privileged, drop to the sandbox uid for good
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    for root, dirs, names in os.walk(IN):
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), IN)
            try:
                os.makedirs(os.path.dirname(os.path.join(WORK, rel)), exist_ok=True)
                shutil.copyfile(os.path.join(root, n), os.path.join(WORK, rel))
            except OSError as e:
                os.write(2, ("sandbox: input file %s was not copied: %s\\n" % (rel, e.strerror)).encode())
    os.chdir(WORK)
    os.execv(sys.executable, [sys.executable, "-I", "main.py"])


pid = os.fork()
if pid == 0:
    try:
        child()
    except BaseException as e:
        os.write(2, ("sandbox: could not start python: %r\\n" % (e,)).encode())
    os._exit(126)
deadline, timed_out = time.monotonic() + timeout, False
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() >= deadline:
        os.kill(pid, signal.SIGKILL)
        done, status = os.waitpid(pid, 0)
        timed_out = True
        break
    time.sleep(0.005)
rc = os.waitstatus_to_exitcode(status)
rc = 128 - rc if rc < 0 else rc
try:
    os.kill(-1, signal.SIGKILL)  # whatever main.py left behind (not pid 1, not this runner)
except OSError:
    pass
out = os.fdopen(fd, "wb")
n = 0
for root, dirs, names in os.walk(WORK):
    dirs.sort()
    for name in sorted(names):
        full = os.path.join(root, name)
        rel = os.fsencode(os.path.relpath(full, WORK))
        if rel == b"main.py" or rel.startswith(b"__pycache__"):
            continue
        try:
            f = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            f = -1
        if f >= 0:
            try:
                st = os.fstat(f)
                if st.st_mode & 0o170000 == 0o100000 and st.st_size <= max_bytes and n < max_files:
                    with os.fdopen(f, "rb", closefd=False) as h:
                        data = h.read(max_bytes + 1)[:max_bytes]
                    out.write(b"F" + struct.pack(">IQ", len(rel), len(data)) + rel + data)
                    n += 1
                    continue
            except OSError:
                pass
            finally:
                os.close(f)
        out.write(b"S" + struct.pack(">I", len(rel)) + rel)
out.write(b"E" + struct.pack(">i?", rc, timed_out))
out.flush()
sys.exit(min(max(rc, 0), 255))
"""

_PASSWD = "nobody:x:65534:65534:nobody:/sandbox:/usr/sbin/nologin\n"
_GROUP = "nogroup:x:65534:\n"
# The only host files under /etc that the bwrap level shows (the loader's cache and the time zone):
# the rest of /etc is not mounted, and /etc/passwd and /etc/group are two-line stand-ins.
_ETC_BINDS = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives")
_HOST_GRACE_S = 1.0  # the host's deadline past the runner's own timeout (startup, copy in and out)


def _prefixes() -> list[str]:
    return sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix})


def _ancestors(paths: list[str]) -> list[str]:
    """Every proper ancestor directory of `paths` (not `/`), parents before children."""
    out: set[str] = set()
    for p in paths:
        d = os.path.dirname(os.path.normpath(p))
        while d not in ("/", ""):
            out.add(d)
            d = os.path.dirname(d)
    return sorted(out, key=lambda d: (d.count("/"), d))


def run_as_uid() -> tuple[int, int] | None:
    """(uid, gid) that sandboxed code runs as: 65534 when this process is root, else None (keep ours)."""
    return NOBODY if os.geteuid() == 0 else None


def _interpreter_for(run_as: tuple[int, int]) -> str | None:
    """A system Python 3 that `run_as` can execute (for the subprocess level when the project's own
    interpreter is unreachable to that uid), or None."""
    seen: set[str] = set()
    for cand in (shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3"):
        if not cand or not os.path.exists(cand):
            continue
        real = os.path.realpath(cand)
        if real in seen:
            continue
        seen.add(real)
        if _runs_as(real, run_as):
            return real
    return None


def _drop_fn(run_as: tuple[int, int] | None) -> Any:
    if run_as is None:
        return None
    return lambda: drop_to(*run_as)


def parse_side_channel(data: bytes) -> tuple[dict[str, str], tuple[str, ...], tuple[int, bool] | None]:
    """Parse the runner's stream: (files, skipped names, (exit code, timed out) or None when the end
    record is missing or the stream is malformed: the files are then dropped)."""
    files: dict[str, str] = {}
    skipped: list[str] = []
    i, n = 0, len(data)
    try:
        while i < n:
            tag = data[i : i + 1]
            if tag == b"F":
                ln, size = struct.unpack_from(">IQ", data, i + 1)
                i += 13
                name, body = data[i : i + ln], data[i + ln : i + ln + size]
                if len(name) != ln or len(body) != size or len(files) >= MAX_FILES or size > MAX_FILE_BYTES:
                    return {}, (), None
                files[text_name(name)] = body.decode("utf-8", errors="replace")
                i += ln + size
            elif tag == b"S":
                (ln,) = struct.unpack_from(">I", data, i + 1)
                i += 5
                skipped.append(text_name(data[i : i + ln]))
                i += ln
            elif tag == b"E":
                rc, timed_out = struct.unpack_from(">i?", data, i + 1)
                return files, tuple(skipped), (int(rc), bool(timed_out))
            else:
                return {}, (), None
    except struct.error:
        pass
    return {}, (), None


# --------------------------------------------------------------------------- levels
class _LocalSandbox:
    """Shared by the subprocess and bwrap levels: a host temp dir, one limited process run."""

    level = "local"
    network_isolated = False

    def __init__(self, limits: SandboxLimits | None = None):
        self.limits = limits or SandboxLimits()
        self.run_as = run_as_uid()

    def info(self) -> dict[str, Any]:
        return {"level": self.level, "network_isolated": self.network_isolated}

    def close(self) -> None:
        return None


class SubprocessSandbox(_LocalSandbox):
    """The fallback: a plain subprocess with rlimits, a pids cgroup, a watched work dir and an
    audit-hook guard; uid 65534 when the host process is root. It isolates neither network nor
    filesystem (`network_isolated: False`) and is not a security boundary."""

    level = "subprocess"
    network_isolated = False

    def __init__(self, limits: SandboxLimits | None = None, python: str | None = None, allow_root: bool = False):
        super().__init__(limits)
        self.python = python or sys.executable
        log.warning("sandbox level 'subprocess': resource limits only; it isolates neither network nor "
                    "filesystem and is not a security boundary (install bubblewrap for isolation)")
        if self.run_as is not None and not _runs_as(self.python, self.run_as):
            # The project's interpreter often lives where uid 65534 cannot reach it (pyenv under /root):
            # sandboxed code needs only the standard library, so a system interpreter will do.
            fallback = None if python else _interpreter_for(self.run_as)
            if fallback is not None:
                self.python = fallback
            elif allow_root:
                log.warning("sandbox level 'subprocess': %s cannot run as uid %d and no system python3 can; "
                            "allow_root=True: sandboxed code runs as host root", self.python, self.run_as[0])
                self.run_as = None
            else:
                raise RuntimeError(
                    f"sandbox level 'subprocess': {self.python} cannot run as uid {self.run_as[0]} (is the "
                    "interpreter readable by it?) and no system python3 can, so sandboxed code would run as "
                    "host root. Install bubblewrap (apt-get install bubblewrap), pass python= an interpreter "
                    "that uid can run, or pass allow_root=True to accept running it as root"
                )

    def _argv(self) -> list[str]:
        # The guard runs first, then main.py as __main__ (tracebacks keep main.py's own line numbers).
        return [self.python, "-I", "-c", _GUARD + _RUN_MAIN]

    def run(self, code: str, files: Mapping[str, str] | None = None) -> RunResult:
        workdir = tempfile.mkdtemp(prefix="creditgym-sbx-")
        try:
            failed = write_files(workdir, files or {})
            with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8", errors="replace") as f:
                f.write(code)
            _give_tree(workdir, self.run_as)
            try:
                res = run_process(self._argv(), workdir, self.limits, run_as=self.run_as, watch_dir=workdir)
            except OSError as e:  # could not start the process at all (e.g. out of pids on the host)
                log.warning("sandbox %s: run failed to start: %s", self.level, e)
                return RunResult("", f"sandbox failed to start the run: {e}", 126, stopped="crash")
            new_files: dict[str, str] | None = None
            skipped: tuple[str, ...] = ()
            if res.stopped == "disk_limit":  # over the cap: keep none of it
                pass
            else:
                new_files, skipped = read_files(workdir)
                skipped = tuple(failed) + skipped
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return RunResult(**{**res.to_json(), "files": new_files, "files_skipped": skipped})


def _give_tree(path: str, run_as: tuple[int, int] | None) -> None:
    """Hand the work dir to the sandbox uid (it must write there), or open it to it."""
    if run_as is None:
        os.chmod(path, 0o777)
        return
    for root, dirs, names in os.walk(path):
        os.chown(root, *run_as)
        for n in names:
            os.chown(os.path.join(root, n), *run_as)


def _runs_as(python: str, run_as: tuple[int, int]) -> bool:
    try:
        p = subprocess.run([python, "-I", "-c", "pass"], capture_output=True, timeout=20,
                           preexec_fn=_drop_fn(run_as), cwd="/")
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0


def bwrap_available(path: str = BWRAP) -> tuple[bool, str]:
    """Probe bwrap the way runs use it (a size-capped tmpfs; unprivileged with `--unshare-all`, or,
    as root, privileged without a user namespace and with the runner's capabilities); (ok, reason)."""
    if not os.path.exists(path):
        return False, f"{path} not found: install bubblewrap (apt-get install bubblewrap)"
    if run_as_uid() is None:
        ns = ["--unshare-all"]
    else:
        ns = ["--unshare-pid", "--unshare-net", "--cap-drop", "ALL", "--cap-add", "CAP_SETUID"]
    argv = [path, *ns, "--ro-bind", "/", "/", "--perms", "0777", "--size", "1048576", "--tmpfs", "/tmp", "true"]
    try:
        p = subprocess.run(argv, capture_output=True, timeout=10, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"bwrap probe failed: {e}"
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip()
        return False, (f"bwrap probe failed ({err}); unprivileged user namespaces may be disabled, or this "
                       "bubblewrap lacks --size/--perms (install bubblewrap >= 0.8)")
    return True, ""


class BwrapSandbox(_LocalSandbox):
    """bubblewrap as an unprivileged host uid: every namespace unshared (no network), read-only binds
    of the system and Python directories, a minimal /etc, size-capped tmpfs `/tmp` and work dir
    (`/sandbox`), uid 65534 inside, all capabilities dropped, plus the rlimits and the pids cgroup."""

    level = "bwrap"
    network_isolated = True

    def __init__(self, limits: SandboxLimits | None = None, bwrap: str = BWRAP):
        ok, why = bwrap_available(bwrap)
        if not ok:
            raise RuntimeError(f"sandbox='bwrap' is not usable: {why}. Use sandbox='auto' to fall back.")
        super().__init__(limits)
        self.bwrap = bwrap

    def _argv(self, indir: str, fd: int) -> list[str]:
        mb = 1024 * 1024
        argv = [self.bwrap, "--die-with-parent", "--new-session"]
        if self.run_as is None:
            # Unprivileged: a user namespace in which uid 65534 stands for the calling user.
            argv += ["--unshare-all"]
        else:
            # Host root: no user namespace (in one, the sandbox user would be host root); bwrap
            # builds the mounts privileged and the runner drops its child to uid 65534 for good.
            argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        # Privileged bwrap makes the parents of mount points mode 0700: make them 0755 first, or the
        # sandbox uid could not reach the interpreter under them.
        for d in _ancestors(["/etc/passwd", *_prefixes()]):
            argv += ["--perms", "0755", "--dir", d]
        for p in ("/usr", "/bin", "/lib", "/lib64", *_ETC_BINDS):
            argv += ["--ro-bind-try", p, p]
        argv += ["--ro-bind", os.path.join(indir, "passwd"), "/etc/passwd",
                 "--ro-bind", os.path.join(indir, "group"), "/etc/group"]
        # tmpfs /tmp first: a checkout (and its venv) may itself live under /tmp and must stay visible.
        argv += ["--perms", "1777", "--size", str(int(self.limits.tmp_mb) * mb), "--tmpfs", "/tmp"]
        for p in _prefixes():
            argv += ["--ro-bind-try", p, p]
        argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "0777", "--size", str(int(self.limits.disk_mb) * mb),
                 "--tmpfs", "/sandbox", "--ro-bind", indir, "/.sandbox-in", "--chdir", "/sandbox", "--clearenv"]
        for k, v in CLEAN_ENV.items():
            argv += ["--setenv", k, v]
        if self.run_as is None:
            argv += ["--uid", "65534", "--gid", "65534", "--cap-drop", "ALL"]
        else:
            # The runner (uid 0 in name only: no DAC override) keeps just what dropping and killing need.
            argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
        # The sandbox's root is a tmpfs with no size cap (writable by the sandbox uid in a user
        # namespace): make it read-only, so only the capped /tmp and /sandbox take writes.
        argv += ["--remount-ro", "/"]
        drop = str(self.run_as[0]) if self.run_as is not None else "-1"
        argv += [sys.executable, "-I", "/.sandbox-in/runner.py", str(fd), repr(float(self.limits.timeout_s)),
                 str(MAX_FILES), str(MAX_FILE_BYTES), drop]
        return argv

    def run(self, code: str, files: Mapping[str, str] | None = None) -> RunResult:
        indir = tempfile.mkdtemp(prefix="creditgym-sbx-")
        try:
            os.chmod(indir, 0o755)  # read-only for the sandbox uid; nothing is written back here
            work = os.path.join(indir, "work")
            os.mkdir(work)
            failed = write_files(work, files or {})
            for name, text in (("work/main.py", code), ("runner.py", _RUNNER), ("passwd", _PASSWD),
                               ("group", _GROUP)):
                with open(os.path.join(indir, name), "w", encoding="utf-8", errors="replace") as f:
                    f.write(text)
            for root, dirs, names in os.walk(indir):
                for n in dirs:
                    os.chmod(os.path.join(root, n), 0o755)
                for n in names:
                    os.chmod(os.path.join(root, n), 0o644)
            side = SideChannel.open(cap=MAX_FILES * (MAX_FILE_BYTES + 4096) + 65536)
            limits = dataclasses.replace(self.limits, timeout_s=self.limits.timeout_s + _HOST_GRACE_S)
            try:
                res = run_process(self._argv(indir, side.write_fd), "/", limits, side=side)
            except OSError as e:  # could not start the process at all (e.g. out of pids on the host)
                log.warning("sandbox %s: run failed to start: %s", self.level, e)
                return RunResult("", f"sandbox failed to start the run: {e}", 126, stopped="crash")
        finally:
            shutil.rmtree(indir, ignore_errors=True)
        new_files, skipped, end = parse_side_channel(bytes(side.data))
        out = res.to_json()
        if end is None or side.overflow:  # the runner did not finish: keep none of the run's files
            return RunResult(**{**out, "files": None})
        rc, timed_out = end
        if timed_out and res.stopped in ("", "cpu_limit"):
            out.update(stopped="timeout", timed_out=True)
        return RunResult(**{**out, "files": new_files, "files_skipped": tuple(failed) + skipped})


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



def escape_matrix(level: str, limits: SandboxLimits | None = None, cases: Any = None) -> list[Any]:
    """Run the named escape attempts against `level`; see `creditgym.envs.tools.escape.escape_matrix`."""
    from creditgym.envs.tools.escape import escape_matrix as run

    return run(level, limits=limits, cases=cases)
