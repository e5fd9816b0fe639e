"""Fake backends on 127.0.0.1 for the search, self-search and red-team tests (stdlib ThreadingHTTPServer).

`FakeServer(handler_fn)` serves `handler_fn(path, headers, body) -> (status, bytes, delay_s)` and
records every request; use it as a context manager.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, bytes, float]
HandlerFn = Callable[[str, dict[str, str], Any], Reply]


def json_reply(obj: Any, status: int = 200, delay_s: float = 0.0) -> Reply:
    return status, json.dumps(obj).encode(), delay_s


class FakeServer:
    """A threaded HTTP server on 127.0.0.1:0 answering POSTs with `handler_fn`."""

    def __init__(self, handler_fn: HandlerFn):
        self.handler_fn = handler_fn
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.requests.append({"path": self.path, "headers": headers, "body": body})
                status, data, delay = outer.handler_fn(self.path, headers, body)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def retrieval_handler(search: Callable[[str, int], list[dict[str, Any]]], scores: bool = True) -> HandlerFn:
    """Search-R1's `/retrieve` protocol over a local `search(query, topk)` function."""

    def handle(path: str, headers: dict[str, str], body: Any) -> Reply:
        if path != "/retrieve":
            return 404, b'{"detail": "Not Found"}', 0.0
        result = []
        for q in body["queries"]:
            docs = search(q, int(body["topk"]))
            items = [
                {"document": {"id": d["id"], "contents": d["contents"]}, "score": d["score"]} if scores
                else {"id": d["id"], "contents": d["contents"]}
                for d in docs
            ]
            result.append(items)
        return json_reply({"result": result})

    return handle


def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
