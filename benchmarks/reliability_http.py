"""HTTP part of the reliability bench (issue 17): every HTTP client against local fake servers.

`FaultServer` serves one fault on 127.0.0.1 (an ephemeral port, daemon threads, closed on exit);
`http_fault_matrix` runs each client through each fault and says whether the fault was contained:
the call ended in a clean error of the client's own kind (`BackendError`, `OpenAIError`, an env's
error observation, `MCPError`) or in a clean success after a retry, within the client's deadline
plus a small slack, with bounded memory (tracemalloc peak during the call). docs/backends.md lists
the limits this checks.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from creditgym.agents import Context, OpenAIPolicy, Sampling
from creditgym.envs.base import BackendError
from creditgym.envs.http_client import DEFAULT_MAX_BODY_BYTES, JsonClient
from creditgym.envs.redteam.backends import ChatEndpoint, judge_canary_endpoint
from creditgym.envs.redteam.game import build_game
from creditgym.envs.search.retrievers import HttpRetriever
from creditgym.envs.selfsearch.simsearch_env import SimSearchEnv
from creditgym.envs.tools.mcp_client import MCPClient, MCPError

__all__ = ["CLIENTS", "FAULTS", "FaultServer", "http_fault_matrix"]

log = logging.getLogger(__name__)

FAULTS = ("http_500", "429_retry_after", "hang", "trickle", "malformed_json", "deep_nesting", "huge_body",
          "reset_mid_body")
"""Faults a FaultServer serves: always 500; one 429 with a short Retry-After, then valid replies; no
answer; a valid reply one byte at a time; a truncated body; 100 000 nested arrays; a body far past the
clients' caps (streamed, no Content-Length); a connection reset after part of the body."""

_CHAT_CONTENT = 'Doc 1: Velmora is a city.\n{"leak": false, "violation": false, "refusal": true, "helpful": false}'
_OK_CHAT = {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": _CHAT_CONTENT}}]}
_OK_RETRIEVE = {"result": [[{"document": {"id": "d1", "contents": '"Velmora"\nVelmora is a city.'}, "score": 1.0}]]}
_HUGE_BODY_BYTES = 48 * 2**20  # past every client's cap, the 16 MiB default included
_CHUNK = b" " * 65536


def _ok_reply(path: str) -> bytes:
    return json.dumps(_OK_RETRIEVE if path.rstrip("/").endswith("/retrieve") else _OK_CHAT).encode()


class FaultServer:
    """A ThreadingHTTPServer on 127.0.0.1:0 that answers every request with `fault` (one of FAULTS);
    `retry_after_s` is the 429's Retry-After and `trickle_gap_s` the pause between trickled bytes.
    `url` is its origin; `hits` counts requests. Use it as a context manager."""

    def __init__(self, fault: str, retry_after_s: float = 0.1, trickle_gap_s: float = 0.05):
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
        self.fault, self.retry_after_s, self.trickle_gap_s = fault, retry_after_s, trickle_gap_s
        self.hits = 0
        self.closing = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake._answer(self)

            def do_GET(self) -> None:
                fake._answer(self)

            def do_DELETE(self) -> None:
                fake._answer(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda *a: None  # type: ignore[method-assign]  # clients hang up mid-write by design
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="creditgym-fault-server", daemon=True)

    def reset(self) -> None:
        """Count requests from 0 again (the 429 fault answers 429 to the first one after a reset)."""
        with self._lock:
            self.hits = 0

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.closing.set()  # wakes hanging and trickling handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @staticmethod
    def _head(h: BaseHTTPRequestHandler, status: int, length: int | None, extra: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        if length is not None:
            h.send_header("Content-Length", str(length))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self._head(h, status, len(body), extra)
        h.wfile.write(body)

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.hits += 1
            first = self.hits == 1
        h.close_connection = True
        try:
            self._fault(h, first, _ok_reply(h.path))
        except OSError:
            pass  # the client gave up on us: what the fault is for

    def _fault(self, h: BaseHTTPRequestHandler, first: bool, ok: bytes) -> None:
        f = self.fault
        if f == "http_500":
            self._send(h, 500, b'{"error": "internal"}')
        elif f == "429_retry_after":
            if first:
                self._send(h, 429, b'{"error": "slow down"}', {"Retry-After": f"{self.retry_after_s:g}"})
            else:
                self._send(h, 200, ok)
        elif f == "hang":
            self.closing.wait(60.0)
        elif f == "trickle":
            self._head(h, 200, len(ok))
            for i in range(len(ok)):
                if self.closing.wait(self.trickle_gap_s):
                    return
                h.wfile.write(ok[i : i + 1])
                h.wfile.flush()
        elif f == "malformed_json":
            self._send(h, 200, ok[: len(ok) // 2])
        elif f == "deep_nesting":
            self._send(h, 200, b"[" * 100_000 + b"]" * 100_000)
        elif f == "huge_body":
            self._head(h, 200, None)
            h.wfile.write(b"[")
            for _ in range(_HUGE_BODY_BYTES // len(_CHUNK)):
                if self.closing.is_set():
                    return
                h.wfile.write(_CHUNK)
            h.wfile.write(b"]")
        elif f == "reset_mid_body":
            self._head(h, 200, len(ok) + 1000)
            h.wfile.write(ok[:20])
            h.wfile.flush()
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()  # SO_LINGER 0: the close sends RST


# ----------------------------------------------------------------------------- clients
@dataclass(frozen=True)
class _Limits:
    timeout_s: float
    deadline_s: float  # the client's own wall-clock bound on one call
    max_body_bytes: int


Call = Callable[[], str]
Client = Callable[[str, _Limits], "tuple[Call, Callable[[], None]]"]
"""Builds a client for a server origin (not timed) and returns `(call, close)`: `call` makes one
request and returns a short outcome ("ok ..." or "error ...") or raises the client's clean error."""


def _json_client(url: str, lim: _Limits) -> tuple[Call, Callable[[], None]]:
    c = JsonClient(url, timeout_s=lim.timeout_s, backoff_base_s=0.02, max_body_bytes=lim.max_body_bytes)

    def call() -> str:
        c.post("/v1/chat/completions", {"messages": []}, required=("choices",))
        return "ok"

    return call, c.close


def _retriever(url: str, lim: _Limits) -> tuple[Call, Callable[[], None]]:
    r = HttpRetriever(url + "/retrieve", timeout_s=lim.timeout_s, backoff_base_s=0.02, max_body_bytes=lim.max_body_bytes)
    return (lambda: f"ok {len(r.search('Velmora', 3))} docs"), r.close


def _openai_policy(url: str, lim: _Limits) -> tuple[Call, Callable[[], None]]:
    p = OpenAIPolicy(url + "/v1", "m", timeout_s=lim.timeout_s, backoff_base_s=0.02, max_body_bytes=lim.max_body_bytes)

    def call() -> str:
        g = p.generate([Context(ids=[1], messages=[{"role": "user", "content": "hi"}])], Sampling())[0]
        return f"ok {len(g.token_ids)} tokens"

    return call, p.close


def _redteam_victim(url: str, lim: _Limits) -> tuple[Call, Callable[[], None]]:
    ep = ChatEndpoint(url + "/v1", "m", timeout_s=lim.timeout_s, backoff_base_s=0.02, max_body_bytes=lim.max_body_bytes)
    return (lambda: f"ok {len(ep.complete(ep.request([{'role': 'user', 'content': 'hi'}])))} chars"), ep.client.close


def _redteam_judge(url: str, lim: _Limits) -> tuple[Call, Callable[[], None]]:
    ep = ChatEndpoint(url + "/v1", "judge", timeout_s=lim.timeout_s, backoff_base_s=0.02, max_body_bytes=lim.max_body_bytes)
    game = build_game("canary-L0-00000000")

    def call() -> str:
        verdict, err = judge_canary_endpoint(ep, game, "I cannot share that.")
        return f"ok refusal={verdict['refusal']}" if not err else f"judge error {err[:60]}"

    return call, ep.client.close


def _simsearch_llm(url: str, lim: _Limits) -> tuple[Call, Callable[[], None]]:
    # the env keeps JsonClient's default 16 MiB cap: its constructor has no max_body_bytes knob
    env = SimSearchEnv(split="test", source="llm", llm_url=url + "/v1", llm_model="m", timeout_s=lim.timeout_s,
                       backoff_base_s=0.02)
    env.reset(seed=0, options={"noise_prob": 0.0})

    def call() -> str:
        obs, _, _, _, info = env.step("<search>Velmora</search>")
        if "backend_error" in info:
            return f"error observation {info['backend_error']}"
        return "ok" if "Velmora" in obs else f"ok without documents: {obs[:60]!r}"

    return call, env.close


def _mcp_http(url: str, lim: _Limits) -> tuple[Call, Callable[[], None]]:
    # a fake server is no MCP server: every fault must end as a clean MCPError within start_timeout_s
    def call() -> str:
        MCPClient([{"name": "srv", "url": url + "/mcp"}], timeout_s=lim.timeout_s, start_timeout_s=lim.deadline_s,
                  max_body_bytes=lim.max_body_bytes).close()
        return "ok"

    return call, lambda: None


CLIENTS: dict[str, Client] = {
    "json_client": _json_client,
    "search_retriever": _retriever,
    "openai_policy": _openai_policy,
    "redteam_victim": _redteam_victim,
    "redteam_judge": _redteam_judge,
    "simsearch_llm": _simsearch_llm,
    "mcp_http": _mcp_http,
}


def _clean_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [BackendError]
    try:
        errors.append(MCPError)
    except ImportError:  # pragma: no cover - mcp_client itself has no hard dependency
        pass
    return tuple(errors)


@contextmanager
def _peak_bytes() -> Iterator[list[int]]:
    """Peak traced allocation (all threads) while the block runs, in out[0]."""
    out = [0]
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield out
    finally:
        out[0] = tracemalloc.get_traced_memory()[1] - base
        if started:
            tracemalloc.stop()


def _run_one(client: str, fn: Client, srv: FaultServer, lim: _Limits, slack_s: float, mem_limit: int) -> dict[str, Any]:
    row: dict[str, Any] = {"area": "http", "client": client, "fault": srv.fault}
    if client.startswith("mcp"):
        try:
            import mcp  # noqa: F401
        except ImportError:
            return {**row, "outcome": "skipped", "seconds": 0.0,
                    "detail": "the MCP SDK is not installed (pip install 'creditgym[mcp]')"}
    clean = _clean_errors()
    call, close = fn(srv.url, lim)
    srv.reset()
    try:
        with _peak_bytes() as peak:
            t0 = time.monotonic()
            try:
                detail, ok = call(), True
            except clean as e:
                detail, ok = f"{type(e).__name__}: {str(e)[:120]}", True
            except Exception as e:  # anything else is what the bench is looking for
                detail, ok = f"UNCAUGHT {type(e).__name__}: {str(e)[:120]}", False
            seconds = time.monotonic() - t0
    finally:
        close()
    if seconds > lim.deadline_s + slack_s:
        ok, detail = False, f"took {seconds:.2f} s > deadline {lim.deadline_s:g} s + {slack_s:g} s; {detail}"
    if peak[0] > mem_limit:
        ok, detail = False, f"peak {peak[0] / 2**20:.1f} MiB > {mem_limit / 2**20:.0f} MiB; {detail}"
    return {**row, "outcome": "contained" if ok else "failed", "seconds": round(seconds, 3),
            "detail": f"{detail} (peak {peak[0] / 2**20:.1f} MiB, {srv.hits} requests)"}


def http_fault_matrix(timeout_s: float = 1.0, clients: tuple[str, ...] | None = None,
                      faults: tuple[str, ...] = FAULTS, max_body_bytes: int = 2**20) -> list[dict[str, Any]]:
    """Run every client in `clients` (default: all of CLIENTS) through every fault; one row each:
    `{"area": "http", "client", "fault", "outcome": "contained"|"failed"|"skipped", "seconds", "detail"}`.

    Clients get `timeout_s` per attempt and their default deadline (2 * timeout_s); a row fails when
    the call raised anything but the client's clean error, took longer than that deadline plus
    max(1 s, timeout_s), or its traced memory peaked above 3 caps plus 8 MiB (the cap is
    `max_body_bytes`, 16 MiB for simsearch_llm, which keeps the default)."""
    names = clients or tuple(CLIENTS)
    lim = _Limits(timeout_s=timeout_s, deadline_s=2 * timeout_s, max_body_bytes=max_body_bytes)
    rows = []
    for fault in faults:  # one server per fault, shared by the clients in turn
        with FaultServer(fault, retry_after_s=timeout_s / 2, trickle_gap_s=timeout_s / 4) as srv:
            for name in names:
                cap = DEFAULT_MAX_BODY_BYTES if name == "simsearch_llm" else max_body_bytes
                row = _run_one(name, CLIENTS[name], srv, lim, slack_s=max(1.0, timeout_s), mem_limit=3 * cap + 8 * 2**20)
                log.info("http %s / %s: %s in %.2f s", name, fault, row["outcome"], row["seconds"])
                rows.append(row)
    order = {n: i for i, n in enumerate(names)}
    return sorted(rows, key=lambda r: order[r["client"]])  # stable: faults keep their order per client
