"""Sandbox levels: limits (CPU, memory, output, file size, processes) and, under bubblewrap, network and
filesystem isolation. Every limit is checked through the env, which must keep working afterwards."""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from creditgym.envs.tools import SandboxLimits, ToolsEnv, bwrap_available, make_sandbox
from creditgym.envs.tools.escape import _live

BWRAP_OK, BWRAP_WHY = bwrap_available()
LEVELS = [
    pytest.param("bwrap", marks=pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap unusable: {BWRAP_WHY}")),
    "subprocess",
]
LIMITS = SandboxLimits(timeout_s=1.5, memory_mb=256, pids=32)

FORK_LOOP = """
import os, time
{fork_def}
n = 0
for i in range(200):
    try:
        pid = fork()
    except OSError as e:
        print("fork failed:", type(e).__name__)
        break
    if pid < 0:
        print("fork failed: -1")
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
print("forked", n)
"""
OS_FORK = "fork = os.fork"
# ctypes walks around the subprocess level's audit hook: the pids cgroup must still bound it.
LIBC_FORK = "import ctypes\nfork = ctypes.CDLL(None, use_errno=True).fork"

CASES = {
    "cpu": ("while True:\n    pass\n", "time limit"),
    "memory": ("x = bytearray(4 * 1024 ** 3)\nprint(len(x))\n", "memory limit"),
    "output": ("import sys\nline = 'y' * 99 + '\\n'\nfor _ in range(10 ** 6):\n    sys.stdout.write(line)\n", "output limit"),
    "lines": ("for i in range(10 ** 7):\n    print(i)\n", "output limit"),
    "write": ("with open('big.bin', 'wb') as f:\n    for _ in range(100):\n        f.write(b'z' * 1_000_000)\n", "file size limit"),
}


# Every test run names its process (and so its forks) with a token; leftovers are found by that name,
# so sandbox runs of other processes on the machine do not count.
TOKEN = f"cgt{os.getpid() % 100000:05d}"
NAME_LINE = f"import ctypes as _c; _c.CDLL(None).prctl(15, b{TOKEN!r}, 0, 0, 0)\n"


def _leftovers() -> list[int]:
    """Live (not zombie) processes started by this test module's sandbox runs."""
    return _live(TOKEN)


def _python(code: str) -> str:
    return "<tool_call>\n" + json.dumps({"name": "python", "arguments": {"code": code}}) + "\n</tool_call>"


@pytest.fixture(scope="module", params=LEVELS)
def env(request: pytest.FixtureRequest) -> ToolsEnv:
    e = ToolsEnv(task_types=("arith",), tools=("python",), sandbox=request.param, timeout_s=LIMITS.timeout_s,
                 memory_mb=LIMITS.memory_mb, max_turns=50)
    yield e
    e.close()


def _run(env: ToolsEnv, code: str) -> dict:
    if env.turn >= env.max_turns - 2 or env._done:
        env.reset(seed=0)
    _, _, _, _, info = env.step(_python(NAME_LINE + code))
    assert info["invalid"] is False
    return json.loads(info["tool_results"][0])


def _still_works(env: ToolsEnv) -> None:
    res = _run(env, "print(6 * 7)")
    assert res["ok"] is True and res["result"]["stdout"] == "42\n"
    assert _leftovers() == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_limit_stops_run_with_clear_observation(env: ToolsEnv, case: str) -> None:
    code, message = CASES[case]
    res = _run(env, code)
    assert res["ok"] is False and message in res["error"], res
    if case == "cpu":
        assert res["result"]["timed_out"] is True
    if case in ("output", "lines"):
        assert res["result"]["output_truncated"] is True
        assert len(res["result"]["stdout"]) <= env.max_output_chars + 40
    if case == "memory":
        assert "MemoryError" in res["result"]["stderr"] and res["result"]["timed_out"] is False
    _still_works(env)


@pytest.mark.parametrize("fork_def", [OS_FORK, LIBC_FORK], ids=["os.fork", "libc.fork"])
def test_fork_loop_is_bounded_and_nothing_is_left(env: ToolsEnv, fork_def: str) -> None:
    res = _run(env, FORK_LOOP.format(fork_def=fork_def))
    out = res["result"]["stdout"] + res["result"]["stderr"]
    if env.sandbox.level == "subprocess" and fork_def == OS_FORK:
        assert "fork failed: PermissionError" in out  # the audit hook refuses it
    else:
        assert "fork failed" in out, out  # the pids cgroup (pids.max) stopped the loop
        assert "forked 200" not in out
    _still_works(env)


def test_binary_output_and_closed_stdout(env: ToolsEnv) -> None:
    res = _run(env, "import sys\nsys.stdout.buffer.write(bytes(range(256)))\n")
    assert res["ok"] is True and "\ufffd" in res["result"]["stdout"]
    res = _run(env, "import os\nos.close(1)\nprint('gone')\n")
    assert res["ok"] is False and res["result"]["stdout"] == ""
    _still_works(env)


def test_sandbox_info_reports_isolation(env: ToolsEnv) -> None:
    _, _, _, _, info = env.step(_python("print(1)"))
    if env.sandbox.level == "subprocess":
        assert info["sandbox"] == {"level": "subprocess", "network_isolated": False}
    else:
        assert info["sandbox"] == {"level": "bwrap", "network_isolated": True}


@pytest.fixture()
def listener() -> tuple[int, list]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    seen: list = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            seen.append(conn)
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1], seen
    stop.set()
    t.join(1)
    srv.close()


CONNECT = "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('CONNECTED')\n"


@pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap unusable: {BWRAP_WHY}")
def test_bwrap_denies_network_and_outside_files(listener: tuple[int, list], tmp_path) -> None:
    port, seen = listener
    sb = make_sandbox("bwrap", LIMITS)
    r = sb.run(CONNECT.format(port=port))
    assert "CONNECTED" not in r.stdout and r.exit_code != 0 and seen == []
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-42")
    r = sb.run(f"print(open({str(secret)!r}).read())")
    assert "TOPSECRET" not in r.stdout and r.exit_code != 0
    outside = tmp_path / "outside.txt"
    r = sb.run(f"open({str(outside)!r}, 'w').write('x')\n")
    assert r.exit_code != 0 and not outside.exists()
    r = sb.run("open('/etc/creditgym-test', 'w').write('x')\n")
    assert r.exit_code != 0 and not os.path.exists("/etc/creditgym-test")
    r = sb.run("open('inside.txt', 'w').write('ok')\n")
    assert r.exit_code == 0 and r.files == {"inside.txt": "ok"}


def test_subprocess_level_is_not_network_isolated(listener: tuple[int, list]) -> None:
    port, seen = listener
    sb = make_sandbox("subprocess", LIMITS)
    assert sb.network_isolated is False and sb.info() == {"level": "subprocess", "network_isolated": False}
    r = sb.run(CONNECT.format(port=port))
    # The audit hook refuses casual socket use, but this level promises no network isolation.
    assert "sandbox: socket" in r.stderr and "CONNECTED" not in r.stdout


def test_explicit_unknown_level_raises() -> None:
    with pytest.raises(ValueError, match="sandbox must be one of"):
        make_sandbox("vm", LIMITS)


def test_auto_falls_back_in_order(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from creditgym.envs.tools import sandbox as sbx

    monkeypatch.setattr(sbx, "bwrap_available", lambda path=sbx.BWRAP: (False, "probe failed"))
    monkeypatch.setattr(sbx, "docker_available", lambda timeout_s=2.0: False)
    with caplog.at_level("WARNING"):
        sb = make_sandbox("auto", LIMITS)
    assert sb.level == "subprocess" and "not a security boundary" in caplog.text
    if BWRAP_OK:
        monkeypatch.undo()
        assert make_sandbox("auto", LIMITS).level == "bwrap"


def test_explicit_bwrap_without_bwrap_raises_with_hint() -> None:
    from creditgym.envs.tools.sandbox import BwrapSandbox

    with pytest.raises(RuntimeError, match=r"not usable.*install bubblewrap"):
        BwrapSandbox(LIMITS, bwrap="/nonexistent/bwrap")


# --------------------------------------------------------------------------- host root, caps, names
ISOLATING = [pytest.param("bwrap", marks=pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap unusable: {BWRAP_WHY}"))]
READ_ATTEMPT = (
    "for p in {paths!r}:\n    try:\n        with open(p, 'rb') as f:\n            print('READ', len(f.read()))\n"
    "    except OSError as e:\n        print('denied', type(e).__name__)\n"
)


@pytest.mark.parametrize("level", ISOLATING)
def test_root_only_host_files_are_unreadable_inside(level: str) -> None:
    import secrets
    import shutil
    import sys
    import tempfile

    paths = ["/etc/shadow", "/etc/gshadow"]
    made = None
    token = secrets.token_hex(16)
    if os.geteuid() == 0 and os.access(sys.prefix, os.W_OK):
        # A root-only file in a host dir the sandbox shows (bwrap binds the Python prefix).
        made = tempfile.mkdtemp(prefix="creditgym-test-", dir=sys.prefix)
        os.chmod(made, 0o755)
        path = os.path.join(made, "root-only.txt")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, token.encode())
        os.close(fd)
        paths.append(path)
    try:
        r = make_sandbox(level, LIMITS).run(READ_ATTEMPT.format(paths=paths))
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)
    lines = r.stdout.split("\n")
    read_any = any(ln.startswith("READ") for ln in lines) or token in r.stdout + r.stderr
    # Never print what was read: the failure message holds only the verdict.
    assert not read_any, "a root-only host file was readable inside the sandbox"
    assert sum(ln.startswith("denied") for ln in lines) == len(paths), "every read attempt must have failed"


@pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap unusable: {BWRAP_WHY}")
def test_bwrap_code_runs_as_unprivileged_uid_without_capabilities() -> None:
    r = make_sandbox("bwrap", LIMITS).run(
        "import os\nst = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
        "print(os.getuid(), os.geteuid(), os.getgid(), st['CapEff'].strip(), st['CapPrm'].strip(), st['NoNewPrivs'].strip())\n"
    )
    uid, euid, gid, cap_eff, cap_prm, nnp = r.stdout.split()
    assert (uid, euid, gid) == ("65534", "65534", "65534")
    assert int(cap_eff, 16) == 0 and int(cap_prm, 16) == 0 and nnp == "1"


@pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap unusable: {BWRAP_WHY}")
def test_bwrap_etc_is_minimal() -> None:
    r = make_sandbox("bwrap", LIMITS).run("import os\nprint(sorted(os.listdir('/etc')))\n")
    listed = set(json.loads(r.stdout.replace("'", '"')))
    assert "shadow" not in listed and "gshadow" not in listed and {"passwd", "group"} <= listed
    assert listed <= {"passwd", "group", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives"}


FILL = ("import os\nn = 0\ntry:\n    while n < {guard}:\n        with open({where!r} + str(n), 'wb') as f:\n"
        "            f.write(b'z' * 2 ** 20)\n        n += 2 ** 20\n        print(n, flush=True)\n"
        "except OSError as e:\n    print('stopped', e.strerror)\n")


@pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap unusable: {BWRAP_WHY}")
@pytest.mark.parametrize("where", ["fill-", "/tmp/fill-"], ids=["workdir", "tmp"])
def test_bwrap_fills_stop_at_the_cap(where: str) -> None:
    sb = make_sandbox("bwrap", SandboxLimits(timeout_s=3, memory_mb=256, pids=32, disk_mb=8, tmp_mb=8))
    r = sb.run(FILL.format(guard=64 * 2**20, where=where))
    written = max([int(x) for x in r.stdout.split() if x.isdigit()], default=0)
    assert "No space left on device" in r.stdout
    assert 4 * 2**20 <= written <= 8 * 2**20


def test_subprocess_work_dir_watch_stops_a_fill_and_drops_its_files() -> None:
    sb = make_sandbox("subprocess", SandboxLimits(timeout_s=3, memory_mb=256, pids=32, disk_mb=8))
    r = sb.run(FILL.format(guard=512 * 2**20, where="fill-"))
    written = max([int(x) for x in r.stdout.split() if x.isdigit()], default=0)
    assert r.stopped == "disk_limit" and r.files is None
    # the cap plus what one 5 ms watch period of writing adds on a loaded host (docs/sandbox.md):
    # stopped far below the 512 MB the code would write unchecked
    assert written <= (8 + 96) * 2**20


def test_disk_limit_is_a_clear_tool_error_and_the_env_keeps_working(env: ToolsEnv) -> None:
    small = ToolsEnv(task_types=("arith",), tools=("python",), sandbox=env.sandbox.level, timeout_s=3,
                     memory_mb=256, disk_mb=8, max_turns=5)
    try:
        small.reset(seed=0)
        fill = "for i in range(96):\n    open('fill-%d' % i, 'wb').write(b'z' * 2 ** 20)\n"
        _, _, _, _, info = small.step(_python(fill))
        res = json.loads(info["tool_results"][0])
        assert res["ok"] is False and res["error"].startswith("disk limit"), res["error"]
        _, _, _, _, info = small.step(_python("print(6 * 7)"))
        assert json.loads(info["tool_results"][0])["result"]["stdout"] == "42\n"
    finally:
        small.close()


def test_non_utf8_file_names_become_valid_text(env: ToolsEnv) -> None:
    res = _run(env, "import os\nopen(b'caf\\xe9-\\xff.txt', 'wb').write(b'x')\nprint('ok')\n")
    assert res["ok"] is True
    names = list(env._files)
    assert any(n.startswith("caf") for n in names)
    for n in names:
        n.encode("utf-8")  # no lone surrogates: the Collector encodes observations as UTF-8


def test_write_files_never_raises_on_bad_names(tmp_path) -> None:
    from creditgym.envs.tools.process import write_files

    bad = {"a\x00b": "x", "/abs": "x", "../up": "x", "é" * 200: "x", "ok.txt": "fine", "ok.txt/sub": "clash",
           "lone\udc80": "x"}
    failed = write_files(str(tmp_path), bad)
    assert (tmp_path / "ok.txt").read_text() == "fine"
    assert set(failed) == set(bad) - {"ok.txt"}


def test_side_channel_parser_rejects_malformed_streams() -> None:
    import struct

    from creditgym.envs.tools.sandbox import parse_side_channel

    good = b"F" + struct.pack(">IQ", 5, 2) + b"a.txt" + b"hi" + b"S" + struct.pack(">I", 1) + b"\xff"
    good += b"E" + struct.pack(">i?", 3, True)
    assert parse_side_channel(good) == ({"a.txt": "hi"}, ("\ufffd",), (3, True))
    assert parse_side_channel(good[:-3]) == ({}, (), None)  # no end record: nothing is kept
    assert parse_side_channel(b"Q" + good) == ({}, (), None)
    assert parse_side_channel(b"F" + struct.pack(">IQ", 5, 10**12) + b"a.txt") == ({}, (), None)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_side_channel_parser_is_total(data: bytes) -> None:
    from creditgym.envs.tools.sandbox import parse_side_channel

    files, skipped, end = parse_side_channel(data)
    assert end is None or isinstance(end[0], int)
    for name in [*files, *skipped]:
        name.encode("utf-8")


@pytest.mark.parametrize("bad", [{"timeout_s": float("nan")}, {"timeout_s": 0}, {"disk_mb": 0}, {"tmp_mb": -1},
                                 {"pids": 0}])
def test_sandbox_limits_reject_unusable_values(bad: dict) -> None:
    with pytest.raises(ValueError, match="must be"):
        SandboxLimits(**bad)


def test_subprocess_guard_refuses_signals_to_the_host() -> None:
    # Signal 0 only probes; without the guard the same call with SIGKILL ends the host process.
    r = make_sandbox("subprocess", LIMITS).run("import os\nos.kill(os.getppid(), 0)\nprint('SIGNALLED')\n")
    assert "sandbox: os.kill is not allowed" in r.stderr and "SIGNALLED" not in r.stdout


def test_subprocess_level_refuses_to_run_as_root_without_a_usable_interpreter(monkeypatch) -> None:
    import creditgym.envs.tools.sandbox as sbx

    if os.geteuid() != 0:
        pytest.skip("only a root host process can run code as root")
    monkeypatch.setattr(sbx, "_runs_as", lambda python, run_as: False)
    with pytest.raises(RuntimeError, match=r"host root.*bubblewrap.*allow_root=True"):
        sbx.SubprocessSandbox(LIMITS)
    assert sbx.SubprocessSandbox(LIMITS, allow_root=True).run_as is None  # an explicit opt-in only
