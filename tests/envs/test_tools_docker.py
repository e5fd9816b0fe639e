"""Docker sandbox level, against a fake Docker Engine API on a unix socket (no daemon runs here).

The fake checks nothing by itself; these tests assert the request shapes it recorded: network
disabled, memory / CPU / pids limits, read-only root, tmpfs /tmp, the work-dir bind, an
unprivileged user, all capabilities dropped, no-new-privileges, and the `timeout -s KILL` exec.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

pytest.importorskip("docker", reason="the docker SDK is not installed (pip install 'creditgym[docker]')")

sys.path.insert(0, os.path.dirname(__file__))
from _tools_fake_docker import IMAGE, FakeDocker

from creditgym.envs.tools import SandboxLimits, ToolsEnv
from creditgym.envs.tools.docker_sandbox import DockerSandbox

LIMITS = SandboxLimits(timeout_s=1.0, memory_mb=256, pids=64)


@pytest.fixture()
def fake(tmp_path):
    f = FakeDocker(str(tmp_path / "docker.sock"))
    yield f
    f.close()


def _creates(fake: FakeDocker) -> list[dict]:
    return [b for m, p, b in fake.requests if m == "POST" and p.endswith("/containers/create")]


def test_container_request_shapes(fake: FakeDocker) -> None:
    sb = DockerSandbox(LIMITS, image=IMAGE, base_url=fake.base_url)
    (body,) = _creates(fake)
    hc = body["HostConfig"]
    assert body["Image"] == IMAGE and body["NetworkDisabled"] is True
    assert body["User"] == "65534:65534" and body["WorkingDir"] == "/sandbox"
    assert hc["Memory"] == 256 * 1024 * 1024 and hc["NanoCpus"] == 10**9 and hc["PidsLimit"] == 64
    assert hc["ReadonlyRootfs"] is True and "/tmp" in hc["Tmpfs"]
    assert hc["CapDrop"] == ["ALL"] and hc["SecurityOpt"] == ["no-new-privileges"]
    assert hc["Binds"] == [f"{sb.workdir}:/sandbox:rw"]
    assert not any(p.endswith("/images/create") for _, p, _ in fake.requests)  # never pulls
    sb.close()
    assert fake.containers == {}  # removed in close()


def test_exec_runs_code_and_syncs_files(fake: FakeDocker) -> None:
    sb = DockerSandbox(LIMITS, image=IMAGE, base_url=fake.base_url)
    r = sb.run("print(open('in.txt').read().upper())\nopen('out.txt', 'w').write('done')\n", {"in.txt": "hello"})
    assert r.exit_code == 0 and r.stdout == "HELLO\n" and r.files == {"in.txt": "hello", "out.txt": "done"}
    (ex,) = [b for m, p, b in fake.requests if m == "POST" and p.endswith("/exec")]
    assert ex["Cmd"] == ["timeout", "-s", "KILL", "1", "python", "-I", "main.py"]
    assert sorted(ex["Env"]) == ["LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONHASHSEED=0"]
    sb.close()


def test_timeout_recreates_the_container(fake: FakeDocker) -> None:
    sb = DockerSandbox(LIMITS, image=IMAGE, base_url=fake.base_url)
    first = sb.container.id
    r = sb.run("while True:\n    pass\n")
    assert r.timed_out and r.exit_code == 137
    assert sb.container.id != first and len(_creates(fake)) == 2
    assert any(m == "DELETE" and first in p for m, p, _ in fake.requests)
    assert sb.run("print(1)").stdout == "1\n"
    sb.close()


def test_missing_image_and_missing_daemon_raise_with_hints(fake: FakeDocker, tmp_path) -> None:
    with pytest.raises(RuntimeError, match=r"not present locally.*docker pull"):
        DockerSandbox(LIMITS, image="no/such:image", base_url=fake.base_url)
    with pytest.raises(RuntimeError, match="no Docker daemon answers"):
        DockerSandbox(LIMITS, image=IMAGE, base_url=f"unix://{tmp_path}/absent.sock")


def test_env_with_docker_sandbox(fake: FakeDocker) -> None:
    env = ToolsEnv(task_types=("arith",), tools=("python",), sandbox="docker", timeout_s=1.0,
                   docker_kwargs={"base_url": fake.base_url})
    env.reset(seed=0)
    code = {"name": "python", "arguments": {"code": "print(6 * 7)"}}
    _, _, _, _, info = env.step("<tool_call>" + json.dumps(code) + "</tool_call>")
    assert info["sandbox"]["level"] == "docker" and info["sandbox"]["network_isolated"] is True
    assert json.loads(info["tool_results"][0])["result"]["stdout"] == "42\n"
    env.close()
    assert fake.containers == {}
