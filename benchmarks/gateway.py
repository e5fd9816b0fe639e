"""`creditgym bench gateway`: what the gateway adds to one model call on loopback (issue 23, target < 5 ms).

The same chat request is sent `--calls` times straight to a fast fake upstream and through the
gateway in front of it, alternating, over kept-alive connections; the table gives the median and p90
wall time of each path and their difference, and the median CPU time per call (all three hops run
in this process), which a machine loaded by other jobs inflates much less than the wall time.
`FakeUpstream` is also what the gateway tests talk to: a vLLM-like server whose token ids are a
fixed byte-level rendering of the messages, so a test knows every id and logprob it must see recorded.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import typer

from creditgym.integrations.gateway import Gateway, upstream_body

__all__ = ["END", "FakeUpstream", "main", "render", "time_calls"]

END, ROLE = 999, {"system": 1000, "user": 1001, "assistant": 1002, "tool": 1003}
"""Fake token ids: a byte is its own id, END closes a message, ROLE[r] opens one."""


def _content_ids(msg: dict[str, Any]) -> list[int]:
    calls = msg.get("tool_calls") or []
    text = "".join(c["function"]["name"] + c["function"]["arguments"] for c in calls) or (
        msg.get("content") or ""
    )
    return list(str(text).encode())


def render(messages: list[dict[str, Any]]) -> list[int]:
    """The fake chat template: per message ROLE id, content bytes, END; then the assistant ROLE id."""
    ids: list[int] = []
    for m in messages:
        ids += [ROLE[m["role"]], *_content_ids(m), END]
    return [*ids, ROLE["assistant"]]


def fake_logprob(position: int, token: int) -> float:
    return -round(0.001 * (position + 1) + token / 1e5, 6)


class FakeUpstream:
    """A vLLM-like OpenAI server on 127.0.0.1: replies `reply(body)` (text, or a dict tool call
    `{"name", "arguments"}` when the request has `tools`); completion ids are the reply's bytes + END,
    logprobs `fake_logprob`. `faults` is a queue of statuses for the next requests (0: drop the
    connection, -1: break a stream after its first event). `requests` holds every body received."""

    def __init__(self, reply: Callable[[dict[str, Any]], Any] = lambda body: "ok"):
        self.reply, self.faults, self.requests = reply, [], []  # type: ignore[var-annotated]
        self._lock = threading.Lock()
        up = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._send(
                    200, json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode()
                )

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with up._lock:
                    up.requests.append(body)
                    fault = up.faults.pop(0) if up.faults else None
                if fault == 0:
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault and fault > 0:
                    self._send(fault, json.dumps({"error": {"message": "injected", "code": fault}}).encode())
                    return
                chunks = up.answer(body, self.path.endswith("/chat/completions"))
                if not body.get("stream"):
                    self._send(200, json.dumps(chunks[0]).encode())
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for c in [*(json.dumps(c) for c in chunks[1:]), "[DONE]"]:
                    data = f"data: {c}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    if fault == -1:  # the stream breaks after its first event
                        self.close_connection = True
                        return
                self.wfile.write(b"0\r\n\r\n")

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]  # dropped connections are the point
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def answer(self, body: dict[str, Any], chat: bool) -> list[dict[str, Any]]:
        """[the full reply, then the stream chunks when it streams] for one request, in vLLM's shape."""
        if chat:
            prompt = render(body["messages"])
        else:
            p = body["prompt"]
            prompt = list(p) if isinstance(p, list) else list(str(p).encode())
        out = self.reply(body)
        tool = body.get("tools") and isinstance(out, dict)
        calls = (
            [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": out["name"], "arguments": out["arguments"]},
                }
            ]
            if tool
            else []
        )
        text = "" if tool else str(out)
        ids = [*(_content_ids({"tool_calls": calls}) if tool else list(text.encode())), END]
        lps = [fake_logprob(i, t) for i, t in enumerate(ids)]
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        tokens = [f"token_id:{t}" if as_ids else (chr(t) if t < 256 else "<end>") for t in ids]
        want_lp, want_ids = bool(body.get("logprobs")), bool(body.get("return_token_ids"))
        finish = "tool_calls" if tool else "stop"

        def choice(sl: slice, full: bool) -> dict[str, Any]:
            last = sl.stop >= len(ids)
            c: dict[str, Any] = {"index": 0, "finish_reason": finish if full or last else None}
            piece = text if full else "".join(chr(t) for t in ids[sl] if t < 256)
            if chat:
                msg: dict[str, Any] = {"role": "assistant", "content": None if tool else piece}
                if tool and (full or sl.start == 0):
                    msg["tool_calls"] = calls if full else [{"index": 0, **calls[0]}]
                c["message" if full else "delta"] = msg
            else:
                c["text"] = piece
            if want_lp:
                c["logprobs"] = ({"content": [{"token": tokens[i], "logprob": lps[i], "top_logprobs": []} for i in range(len(ids))[sl]]}
                                 if chat else {"tokens": tokens[sl], "token_logprobs": lps[sl]})  # fmt: skip
            if want_ids:
                c["token_ids"] = ids[sl]
                if not chat and (full or sl.start == 0):
                    c["prompt_token_ids"] = prompt
            return c

        head = {
            "id": "cmpl-0",
            "object": "chat.completion" if chat else "text_completion",
            "model": body.get("model", "fake"),
        }
        full = {
            **head,
            "choices": [choice(slice(0, len(ids)), True)],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(ids)},
        }
        if want_ids and chat:
            full["prompt_token_ids"] = prompt
        if not body.get("stream"):
            return [full]
        stream = [{**head, "choices": [choice(slice(i, i + 1), False)]} for i in range(len(ids))]
        if want_ids and chat:
            stream[0]["prompt_token_ids"] = prompt
        return [full, *stream]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def time_calls(
    url: str, body: dict[str, Any], calls: int, client: httpx.Client
) -> tuple[list[float], list[float]]:
    """(wall seconds, this process's CPU seconds) of each of `calls` chat requests to `url` (one
    kept-alive client). Client, gateway and fake upstream all run in this process, so the CPU time
    of a call is every hop's work, without the waits for a core that a loaded machine adds."""
    wall, cpu = [], []
    for _ in range(calls):
        c0, t0 = time.process_time(), time.perf_counter()
        r = client.post(f"{url}/chat/completions", json=body)
        r.raise_for_status()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def _p90(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))]


def main(
    calls: int = typer.Option(500, help="calls per path (after --warmup calls each)"),
    warmup: int = typer.Option(50, help="untimed calls per path first"),
    reply_chars: int = typer.Option(64, help="length of the fake upstream's reply"),
) -> None:
    """Added latency of the gateway per chat call on loopback: direct vs through the gateway."""
    up = FakeUpstream(lambda body: "x" * reply_chars)
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "What is the capital of France? " * 8}],
        "max_tokens": 64,
    }
    # direct requests carry the fields the gateway adds, so the upstream does the same work on both paths
    direct_body = upstream_body(body, chat=True)
    with Gateway(up.url) as gw, httpx.Client(timeout=30) as client:
        sid = gw.new_session()
        paths = {"direct": (up.url, direct_body), "gateway": (gw.session_url(sid), body)}
        for url, b in paths.values():
            time_calls(url, b, warmup, client)  # connections opened, code paths warm
        times: dict[str, list[float]] = {k: [] for k in paths}
        cpu: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(calls):  # alternate, so drift in machine load hits both paths alike
            for k, (url, b) in paths.items():
                wall_s, cpu_s = time_calls(url, b, 1, client)
                times[k] += wall_s
                cpu[k] += cpu_s
    up.close()
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    p90 = {k: _p90(v) * 1e3 for k, v in times.items()}
    cpu_ms = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
    typer.echo(
        f"{'path':<10} {'median ms':>10} {'p90 ms':>10} {'cpu ms':>10}   ({calls} calls each, reply {reply_chars} chars)"
    )
    for k in paths:
        typer.echo(f"{k:<10} {med[k]:>10.3f} {p90[k]:>10.3f} {cpu_ms[k]:>10.3f}")
    added = [
        med["gateway"] - med["direct"],
        p90["gateway"] - p90["direct"],
        cpu_ms["gateway"] - cpu_ms["direct"],
    ]
    typer.echo(f"{'added':<10} {added[0]:>10.3f} {added[1]:>10.3f} {added[2]:>10.3f}   (target < 5 ms)")
