"""The sandbox escape matrix: named, cheap escape attempts against one sandbox level (docs/sandbox.md).

`escape_matrix(level)` runs every case and returns one `EscapeResult(name, contained, detail)` per
case; `run_escape(level, name)` runs one. Cases: `network`, `root_only_file`, `write_outside`,
`fork_bomb`, `memory_4gb`, `cpu_loop`, `output_100mb`, `disk_fill`, `tmp_fill`, `orphan_daemon`,
`env_secrets`. Each attempt is honest (it uses ctypes where the subprocess level's audit hook would
stop plain Python) and bounded (a fill writes at most its cap + `FILL_GUARD_MB`, so a level without
a cap does not fill the host). A read attempt reports only whether it read and how many bytes,
never what. The matrix mutates process state while a case runs (a host file or directory it
removes afterwards; `os.environ` for `env_secrets`, restored): do not run it concurrently with
other work in the same process.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from creditgym.envs.tools.process import RunResult, SandboxLimits

__all__ = ["CASES", "FILL_GUARD_MB", "FILL_SLACK_MB", "MATRIX_LIMITS", "EscapeResult", "escape_matrix", "run_escape"]

MATRIX_LIMITS = SandboxLimits(timeout_s=1.5, memory_mb=256, pids=32, disk_mb=16, tmp_mb=16)
FILL_SLACK_MB = 32  # "at the cap plus a little": what a fill may pass its cap by and still count as contained
FILL_GUARD_MB = 48  # a fill attempt stops itself at cap + this, capped or not


@dataclass(frozen=True)
class EscapeResult:
    """One attempt: `contained` is True when the sandbox stopped it, False when it escaped, None when
    `skipped` (the reason). `detail` never holds data the attempt read."""

    name: str
    contained: bool | None
    detail: str
    seconds: float = 0.0
    skipped: str = ""


@dataclass
class _Ctx:
    sandbox: Any
    limits: SandboxLimits
    token: str  # process name of every attempt (and its forks), <= 15 chars

    @property
    def name_line(self) -> str:
        return f"import ctypes as _c\n_c.CDLL(None).prctl(15, {self.token.encode()!r}, 0, 0, 0)\n"

    def run(self, code: str) -> RunResult:
        return self.sandbox.run(self.name_line + code)


def _visible_dir() -> str:
    """A host directory the sandbox levels show (bwrap binds the Python prefix read-only), writable by
    us for the probe files; else the temp dir (then bwrap does not show it at all)."""
    for d in (sys.prefix, tempfile.gettempdir()):
        if os.access(d, os.W_OK):
            return d
    return tempfile.gettempdir()


def _live(token: str) -> list[int]:
    """Live (not zombie) processes named `token`."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
        except OSError:
            continue
        if status.get("Name", "").strip() == token and not status.get("State", "").startswith("Z"):
            out.append(int(pid))
    return out


def _reap(token: str, wait_s: float = 1.0) -> list[int]:
    """Processes named `token` still alive after `wait_s`; they are killed (cleanup) and returned."""
    end = time.monotonic() + wait_s
    left = _live(token)
    while left and time.monotonic() < end:
        time.sleep(0.05)
        left = _live(token)
    for pid in left:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    return left


# --------------------------------------------------------------------------- cases
def _network(ctx: _Ctx) -> tuple[bool, str]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.1)
    port = srv.getsockname()[1]
    seen: list[Any] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            seen.append(1)
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    code = (
        "import ctypes\nok = False\ntry:\n    import socket\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n    ok = True\n"
        "except BaseException as e:\n    print('socket refused:', type(e).__name__)\n"
        "if not ok:\n    libc = ctypes.CDLL(None, use_errno=True)\n    fd = libc.socket(2, 1, 0)\n"
        f"    addr = (2).to_bytes(2, 'little') + ({port}).to_bytes(2, 'big') + bytes([127, 0, 0, 1]) + bytes(8)\n"
        "    ok = fd >= 0 and libc.connect(fd, addr, 16) == 0\n"
        "print('CONNECTED' if ok else 'no connection')\n"
    )
    try:
        r = ctx.run(code)
        time.sleep(0.05)
    finally:
        stop.set()
        t.join(1)
        srv.close()
    escaped = bool(seen) or "CONNECTED" in r.stdout
    return not escaped, f"host listener saw {len(seen)} connection(s); {r.stdout.strip()[-200:]}"


def _root_only_file(ctx: _Ctx) -> tuple[bool, str]:
    paths = [p for p in ("/etc/shadow", "/etc/gshadow") if os.path.exists(p) and not os.stat(p).st_mode & 0o004]
    made = None
    secret = uuid.uuid4().hex
    if os.geteuid() == 0:  # only root's 0600 file is "root-only"; ours is ours to read
        made = tempfile.mkdtemp(prefix="creditgym-escape-", dir=_visible_dir())
        os.chmod(made, 0o755)
        path = os.path.join(made, "root-only.txt")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, secret.encode())
        os.close(fd)
        paths.append(path)
    code = (
        f"for p in {paths!r}:\n    try:\n        with open(p, 'rb') as f:\n"
        "            print('READ', p, len(f.read()), 'bytes')\n"
        "    except OSError as e:\n        print('denied', p, type(e).__name__)\n"
    )
    try:
        r = ctx.run(code) if paths else None
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)
    if r is None:
        return True, "no root-only file to try (not root and no unreadable /etc/shadow)"
    leaked = secret in r.stdout or secret in r.stderr
    read = [ln for ln in r.stdout.splitlines() if ln.startswith("READ ")]
    return not (read or leaked), "; ".join(ln[:120] for ln in r.stdout.splitlines()[:4]) or r.stderr[-200:]


def _write_outside(ctx: _Ctx) -> tuple[bool, str]:
    outside = tempfile.mkdtemp(prefix="creditgym-escape-", dir=_visible_dir())
    os.chmod(outside, 0o777)
    name = f"creditgym-escape-{ctx.token}"
    targets = [os.path.join(outside, "written.txt"), f"/etc/{name}", f"/usr/{name}", f"/{name}"]
    code = (
        f"for p in {targets!r}:\n    try:\n        open(p, 'w').write('x')\n        print('WROTE', p)\n"
        "    except OSError as e:\n        print('denied', p, type(e).__name__)\n"
    )
    try:
        r = ctx.run(code)
    finally:
        found = [p for p in targets if os.path.exists(p)]
        for p in found:
            if not p.startswith(outside + os.sep):
                os.unlink(p)
        shutil.rmtree(outside, ignore_errors=True)
    # A write that lands only in the sandbox's own root still escapes the work dir and /tmp caps.
    wrote = [ln for ln in r.stdout.splitlines() if ln.startswith("WROTE")]
    return not found and not wrote, f"host files written: {found}; {r.stdout.strip()[-200:]}"


def _fork_bomb(ctx: _Ctx) -> tuple[bool, str]:
    code = (
        "import ctypes, os, time\nfork = ctypes.CDLL(None, use_errno=True).fork\nn = 0\n"
        "for i in range(500):\n    pid = fork()\n    if pid < 0:\n        break\n"
        "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    n += 1\nprint('forked', n)\n"
    )
    r = ctx.run(code)
    m = re.search(r"forked (\d+)", r.stdout)
    n = int(m.group(1)) if m else -1
    left = _reap(ctx.token, 0.5)
    ok = n < 500 and n <= ctx.limits.pids and not left
    return ok, f"forked {n} of 500 (pids limit {ctx.limits.pids}); {len(left)} left alive after the run"


def _memory_4gb(ctx: _Ctx) -> tuple[bool, str]:
    r = ctx.run("x = bytearray(4 * 1024 ** 3)\nx[::4096] = b'1' * len(x[::4096])\nprint('ALLOCATED')\n")
    last = r.stderr.strip().splitlines()[-1:] or [""]
    return "ALLOCATED" not in r.stdout, f"exit {r.exit_code}; {last[0][:160]}"


def _cpu_loop(ctx: _Ctx) -> tuple[bool, str]:
    t0 = time.monotonic()
    r = ctx.run("while True:\n    pass\n")
    dt = time.monotonic() - t0
    return r.timed_out and dt < ctx.limits.timeout_s + 3.0, f"stopped={r.stopped!r} after {dt:.2f} s"


def _output_100mb(ctx: _Ctx) -> tuple[bool, str]:
    r = ctx.run("import sys\nline = b'y' * 1023 + b'\\n'\nfor _ in range(100 * 1024):\n    sys.stdout.buffer.write(line)\n")
    n = len(r.stdout.encode()) + len(r.stderr.encode())
    return r.output_truncated and n <= ctx.limits.max_capture_bytes, f"kept {n} bytes, stopped={r.stopped!r}"


def _fill(ctx: _Ctx, where: str, cap_mb: int) -> tuple[bool, str]:
    guard = (cap_mb + FILL_GUARD_MB) * 1024 * 1024
    prefix = os.path.join(where, f"creditgym-fill-{ctx.token}-") if where else "fill-"
    code = (
        "import os\nn, chunk = 0, b'z' * (1024 * 1024)\ntry:\n"
        f"    while n < {guard}:\n        with open({prefix!r} + str(n), 'wb') as f:\n"
        "            f.write(chunk)\n        n += len(chunk)\n        print(n, flush=True)\n"
        "except OSError as e:\n    print('stopped:', type(e).__name__, e.strerror)\n"
    )
    try:
        r = ctx.run(code)
    finally:
        if where:
            for p in glob.glob(prefix + "*"):
                os.unlink(p)
    nums = [int(x) for x in re.findall(r"^(\d+)$", r.stdout, re.M)]
    written = max(nums, default=0)
    ok = written <= (cap_mb + FILL_SLACK_MB) * 1024 * 1024
    why = r.stdout.strip().splitlines()[-1:] or [r.stopped]
    return ok, f"wrote {written / 2**20:.0f} MB against a {cap_mb} MB cap; {why[0][:120]}"


def _disk_fill(ctx: _Ctx) -> tuple[bool, str]:
    return _fill(ctx, "", ctx.limits.disk_mb)


def _tmp_fill(ctx: _Ctx) -> tuple[bool, str]:
    return _fill(ctx, "/tmp", ctx.limits.tmp_mb)


def _orphan_daemon(ctx: _Ctx) -> tuple[bool, str]:
    code = (
        "import ctypes, os, time\nlibc = ctypes.CDLL(None)\nif libc.fork() == 0:\n    libc.setsid()\n"
        "    if libc.fork() == 0:\n        time.sleep(30)\n    os._exit(0)\ntime.sleep(0.2)\nprint('daemon started')\n"
    )
    r = ctx.run(code)
    left = _reap(ctx.token, 0.5)
    return not left, f"{len(left)} process(es) alive after the run; {r.stdout.strip()[-80:]}"


def _env_secrets(ctx: _Ctx) -> tuple[bool, str]:
    key, value = "AWS_SECRET_ACCESS_KEY", f"cg-fake-{uuid.uuid4().hex}"
    old = os.environ.get(key)
    os.environ[key] = value
    code = (
        "import os\nfound = [k for k, v in os.environ.items() if 'cg-fake-' in v or k == 'AWS_SECRET_ACCESS_KEY']\n"
        "for pid in os.listdir('/proc'):\n    try:\n        with open('/proc/%s/environ' % pid, 'rb') as f:\n"
        "            if b'cg-fake-' in f.read():\n                found.append('/proc/%s/environ' % pid)\n"
        "    except OSError:\n        pass\nprint('FOUND', found if found else 'nothing')\n"
    )
    try:
        r = ctx.run(code)
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
    return "FOUND nothing" in r.stdout and value not in r.stdout, r.stdout.strip()[-200:] or r.stderr[-200:]


CASES: dict[str, Callable[[_Ctx], tuple[bool, str]]] = {
    "network": _network,
    "root_only_file": _root_only_file,
    "write_outside": _write_outside,
    "fork_bomb": _fork_bomb,
    "memory_4gb": _memory_4gb,
    "cpu_loop": _cpu_loop,
    "output_100mb": _output_100mb,
    "disk_fill": _disk_fill,
    "tmp_fill": _tmp_fill,
    "orphan_daemon": _orphan_daemon,
    "env_secrets": _env_secrets,
}


# --------------------------------------------------------------------------- entry points
def escape_matrix(level: Any, limits: SandboxLimits | None = None,
                  cases: Sequence[str] | None = None) -> list[EscapeResult]:
    """Run `cases` (default: all of CASES, in order) against `level`: a level name for `make_sandbox`
    or a sandbox object. A level that cannot be built gives every case `skipped` with the reason."""
    names = list(cases) if cases is not None else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise ValueError(f"unknown escape cases {unknown}; choose from {list(CASES)}")
    lim = limits or MATRIX_LIMITS
    if isinstance(level, str):
        from creditgym.envs.tools.sandbox import make_sandbox

        try:
            sandbox = make_sandbox(level, lim)
        except (RuntimeError, ImportError, OSError) as e:
            why = f"sandbox level {level!r} unavailable: {e}"
            return [EscapeResult(n, None, why, skipped=why) for n in names]
        own = True
    else:
        sandbox, own = level, False
        lim = getattr(sandbox, "limits", lim)
    out = []
    try:
        for n in names:
            ctx = _Ctx(sandbox, lim, "cge" + uuid.uuid4().hex[:12])
            t0 = time.monotonic()
            contained, detail = CASES[n](ctx)
            out.append(EscapeResult(n, bool(contained), detail, round(time.monotonic() - t0, 3)))
    finally:
        if own:
            sandbox.close()
    return out


def run_escape(level: Any, name: str, limits: SandboxLimits | None = None) -> EscapeResult:
    """One named escape attempt against `level` (see `escape_matrix`)."""
    return escape_matrix(level, limits, [name])[0]
