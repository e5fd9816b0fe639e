"""The docker sandbox level (`creditgym[docker]`): one locked-down container per env (ENVS.md section 3).

The container comes from a local image (missing -> construction error, never a pull) with
`network_disabled=True`, `mem_limit`, `nano_cpus=10**9`, `pids_limit=64`, `read_only=True`, a tmpfs
`/tmp` of `tmp_mb` MB, the work dir bound at `/sandbox`, `user="65534:65534"`, `cap_drop=["ALL"]` and
`security_opt=["no-new-privileges"]`. Each run is `exec_run(["timeout", "-s", "KILL", t, "python",
"-I", "main.py"])`; the container is recreated after a timeout or a crash and removed in `close()`.
The work dir is a host bind: its size is checked after each run only (over `disk_mb`: the run's
files are dropped), so it is not a hard disk cap.

Tested only against a fake Engine API server on a unix socket that checks these request shapes
(no Docker daemon runs on the development machines).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

from creditgym.envs.tools.process import tree_usage
from creditgym.envs.tools.sandbox import CLEAN_ENV, RunResult, SandboxLimits, read_files, write_files

__all__ = ["DockerSandbox"]

log = logging.getLogger(__name__)


class DockerSandbox:
    """Runs code with `exec_run` in a long-lived, network-less, read-only container."""

    level = "docker"
    network_isolated = True

    def __init__(self, limits: SandboxLimits | None = None, image: str = "python:3.11-slim",
                 base_url: str | None = None, client: Any = None):
        try:
            import docker
            import docker.errors
        except ImportError as e:
            raise ImportError("sandbox='docker' needs the docker SDK: pip install 'creditgym[docker]'") from e
        self.limits = limits or SandboxLimits()
        self.image = image
        self._errors = docker.errors
        try:
            self.client = client or (docker.DockerClient(base_url=base_url, version="1.43", timeout=10)
                                     if base_url else docker.from_env(timeout=10))
            self.client.ping()
        except Exception as e:  # the SDK raises several types for an unreachable daemon
            raise RuntimeError(f"sandbox='docker': no Docker daemon answers ({e}); start dockerd or use "
                               "sandbox='bwrap'/'subprocess'") from e
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound as e:
            raise RuntimeError(f"sandbox='docker': image {image!r} is not present locally; run `docker pull "
                               f"{image}` first (the env never pulls)") from e
        self.workdir = tempfile.mkdtemp(prefix="creditgym-docker-")
        os.chmod(self.workdir, 0o777)
        self.container: Any = None
        self._start()

    def _start(self) -> None:
        self.container = self.client.containers.run(
            self.image,
            command=["sleep", "infinity"],
            detach=True,
            network_disabled=True,
            mem_limit=f"{int(self.limits.memory_mb)}m",
            nano_cpus=10**9,
            pids_limit=int(self.limits.pids),
            read_only=True,
            tmpfs={"/tmp": f"rw,size={int(self.limits.tmp_mb)}m"},
            volumes={self.workdir: {"bind": "/sandbox", "mode": "rw"}},
            working_dir="/sandbox",
            user="65534:65534",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            auto_remove=False,
        )

    def _recreate(self) -> None:
        self._remove()
        self._start()

    def _remove(self) -> None:
        if self.container is None:
            return
        try:
            self.container.remove(force=True)
        except self._errors.APIError as e:
            log.warning("docker sandbox: could not remove container: %s", e)
        self.container = None

    def _clear_workdir(self) -> None:
        for name in os.listdir(self.workdir):
            full = os.path.join(self.workdir, name)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                os.unlink(full)

    def run(self, code: str, files: Mapping[str, str] | None = None) -> RunResult:
        self._clear_workdir()
        failed = write_files(self.workdir, files or {})
        with open(os.path.join(self.workdir, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        t = math.ceil(self.limits.timeout_s)
        api = self.client.api
        try:
            ex = api.exec_create(self.container.id, ["timeout", "-s", "KILL", str(t), "python", "-I", "main.py"],
                                 workdir="/sandbox", environment=dict(CLEAN_ENV), user="65534:65534")
            out, err, truncated = bytearray(), bytearray(), False
            cap = self.limits.max_capture_bytes
            for so, se in api.exec_start(ex["Id"], stream=True, demux=True):
                for buf, chunk in ((out, so), (err, se)):
                    if chunk:
                        room = cap - len(out) - len(err)
                        buf += chunk[: max(room, 0)]
                        truncated = truncated or len(chunk) > room
                if truncated:
                    break
            code_ = api.exec_inspect(ex["Id"]).get("ExitCode")
        except self._errors.APIError as e:
            self._recreate()
            return RunResult("", f"docker error: {e}", 125, stopped="crash")
        timed_out = code_ == 137
        exit_code = 137 if code_ is None else int(code_)
        if truncated or timed_out or code_ is None:
            self._recreate()  # stop whatever is still running in the container
        stopped = "output_limit" if truncated else ("timeout" if timed_out else "")
        # The work dir is a host bind: its size is checked only after the run (docs/sandbox.md).
        used, _ = tree_usage(self.workdir, stop_bytes=int(self.limits.disk_mb) * 1024 * 1024)
        new_files: dict[str, str] | None = None
        skipped: tuple[str, ...] = ()
        if used > int(self.limits.disk_mb) * 1024 * 1024:
            stopped = stopped or "disk_limit"
        else:
            new_files, read_skipped = read_files(self.workdir)
            skipped = tuple(failed) + read_skipped
        return RunResult(
            stdout=bytes(out).decode("utf-8", errors="replace"),
            stderr=bytes(err).decode("utf-8", errors="replace"),
            exit_code=exit_code,
            timed_out=timed_out,
            output_truncated=truncated,
            stopped=stopped,
            files=new_files,
            files_skipped=skipped,
        )

    def info(self) -> dict[str, Any]:
        return {"level": self.level, "network_isolated": self.network_isolated, "image": self.image}

    def close(self) -> None:
        self._remove()
        shutil.rmtree(self.workdir, ignore_errors=True)
