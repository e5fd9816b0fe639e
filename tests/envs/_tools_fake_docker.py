"""A fake Docker Engine API server on a unix socket, for the docker sandbox tests.

It answers just the calls `DockerSandbox` makes (ping, image inspect, container create / start /
inspect / remove, exec create / start / inspect), records every request so tests can check their
shapes (network disabled, limits, read-only root, user, capabilities), and "executes" an exec by
running its command on the host in the directory bound at /sandbox, with `python` replaced by
this interpreter, streaming stdout/stderr in Docker's multiplexed frame format.
"""

from __future__ import annotations

import json
import os
import re
import socketserver
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

IMAGE = "python:3.11-slim"


class FakeDocker:
    def __init__(self, path: str, images: tuple[str, ...] = (IMAGE,)):
        self.path = path
        self.images = set(images)
        self.requests: list[tuple[str, str, Any]] = []
        self.containers: dict[str, dict[str, Any]] = {}
        self.execs: dict[str, dict[str, Any]] = {}
        self._n = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                return json.loads(raw) if raw else None

            def _send(self, code: int, obj: Any = None) -> None:
                data = b"" if obj is None else json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.handle(self, "GET")

            def do_POST(self) -> None:
                fake.handle(self, "POST")

            def do_DELETE(self) -> None:
                fake.handle(self, "DELETE")

            def do_HEAD(self) -> None:
                fake.handle(self, "HEAD")

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        if os.path.exists(path):
            os.unlink(path)
        self.server = Server(path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"unix://{self.path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n:012d}"

    def handle(self, h: Any, method: str) -> None:
        path = re.sub(r"^/v[0-9.]+", "", h.path.split("?")[0])
        body = h._body() if method == "POST" else None
        self.requests.append((method, h.path, body))
        if path == "/_ping":
            data = b"OK"
            h.send_response(200)
            h.send_header("Content-Type", "text/plain")
            h.send_header("Content-Length", "2")
            h.send_header("Api-Version", "1.43")
            h.end_headers()
            h.wfile.write(data)
            return
        if path == "/version":
            return h._send(200, {"ApiVersion": "1.43", "Version": "fake"})
        m = re.fullmatch(r"/images/(.+)/json", path)
        if m:
            name = m.group(1)
            if name in self.images:
                return h._send(200, {"Id": "sha256:" + "0" * 64, "RepoTags": [name]})
            return h._send(404, {"message": f"No such image: {name}"})
        if path == "/containers/create":
            cid = self._id("c")
            self.containers[cid] = {"config": body, "running": False}
            return h._send(201, {"Id": cid, "Warnings": []})
        m = re.fullmatch(r"/containers/([^/]+)(/start|/json|/exec|/kill|/stop)?", path)
        if m:
            cid, op = m.group(1), m.group(2)
            if cid not in self.containers:
                return h._send(404, {"message": f"No such container: {cid}"})
            if method == "DELETE":
                del self.containers[cid]
                return h._send(204)
            if op == "/start":
                self.containers[cid]["running"] = True
                return h._send(204)
            if op == "/json":
                cfg = self.containers[cid]["config"]
                return h._send(200, {"Id": cid, "Name": "/fake", "Config": cfg, "State": {"Running": True}})
            if op == "/exec":
                eid = self._id("e")
                self.execs[eid] = {"container": cid, "config": body, "exit": None}
                return h._send(201, {"Id": eid})
            return h._send(204)
        m = re.fullmatch(r"/exec/([^/]+)/(start|json)", path)
        if m:
            eid, op = m.groups()
            if op == "json":
                ex = self.execs[eid]
                return h._send(200, {"ExitCode": ex["exit"], "Running": ex["exit"] is None})
            return self._exec_start(h, eid)
        h._send(404, {"message": f"fake docker: unknown endpoint {method} {path}"})

    def _exec_start(self, h: Any, eid: str) -> None:
        ex = self.execs[eid]
        cont = self.containers[ex["container"]]["config"]
        binds = cont["HostConfig"]["Binds"]
        host = next(b.split(":")[0] for b in binds if b.split(":")[1] == "/sandbox")
        cmd = [sys.executable if c == "python" else c for c in ex["config"]["Cmd"]]
        h.send_response(200)
        h.send_header("Content-Type", "application/vnd.docker.multiplexed-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.flush()
        time.sleep(0.05)  # let the client finish reading the headers before the raw stream starts
        p = subprocess.Popen(cmd, cwd=host, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(e.split("=", 1) for e in ex["config"].get("Env") or []))
        out, err = p.communicate()
        try:
            for stream, data in ((1, out), (2, err)):
                for i in range(0, len(data), 65536):
                    chunk = data[i : i + 65536]
                    h.wfile.write(struct.pack(">BxxxL", stream, len(chunk)) + chunk)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        ex["exit"] = p.returncode if p.returncode >= 0 else 128 - p.returncode
        h.close_connection = True
