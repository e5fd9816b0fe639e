"""JsonClient against a fake server on 127.0.0.1: retries, timeouts, bad JSON, no retry on 4xx."""

import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from creditgym.envs import BackendError
from creditgym.envs.http_client import JsonClient


class _Handler(BaseHTTPRequestHandler):
    script: list = []  # responses to give, in order: (status, body) or "hang"
    hits = 0

    def log_message(self, *a):
        pass

    def do_POST(self):
        type(self).hits += 1
        n = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(n) or b"null")
        action = self.script.pop(0) if self.script else (200, {"echo": body})
        if action == "hang":
            time.sleep(1.0)
            action = (200, {"late": True})
        if callable(action):  # writes its own response
            action(self)
            return
        status, payload, *extra = action
        data = payload if isinstance(payload, bytes) else payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra[0] if extra else {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    _Handler.script, _Handler.hits = [], 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.handle_error = lambda *a: None  # the hang test closes connections the handler still writes to
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def _client(url, retries=2):
    return JsonClient(url, timeout_s=0.3, max_retries=retries, backoff_base_s=0.01)


def test_ok_and_required_fields(server):
    with _client(server) as c:
        assert c.post("/x", {"q": 1}, required=["echo"]) == {"echo": {"q": 1}}
        with pytest.raises(BackendError) as e:
            c.post("/x", {"q": 1}, required=["result"])
        assert e.value.kind == "bad_response"


def test_retries_5xx_then_succeeds(server):
    _Handler.script = [(500, {"e": 1}), (503, {"e": 2})]
    with _client(server) as c:
        assert c.post("/x", {"a": 1}) == {"echo": {"a": 1}}
    assert _Handler.hits == 3


def test_gives_up_after_retries_with_kind(server):
    _Handler.script = [(500, "x")] * 5
    with _client(server, retries=2) as c, pytest.raises(BackendError) as e:
        c.post("/x", {})
    assert e.value.kind == "http_500" and _Handler.hits == 3


def test_no_retry_on_4xx(server):
    _Handler.script = [(404, {"e": "nope"})]
    with _client(server) as c, pytest.raises(BackendError) as e:
        c.post("/x", {})
    assert e.value.kind == "http_404" and _Handler.hits == 1


def test_malformed_json_is_bad_response(server):
    _Handler.script = [(200, "{not json")]
    with _client(server) as c, pytest.raises(BackendError) as e:
        c.post("/x", {})
    assert e.value.kind == "bad_response"


def test_hang_times_out(server):
    _Handler.script = ["hang", "hang"]
    with _client(server, retries=1) as c, pytest.raises(BackendError) as e:
        c.post("/x", {})
    assert e.value.kind == "timeout"


def test_connection_refused_and_bad_url():
    with _client("http://127.0.0.1:9", retries=1) as c, pytest.raises(BackendError) as e:
        c.post("/x", {})
    assert e.value.kind == "connection"
    with pytest.raises(ValueError, match="http://host:port"):
        JsonClient("not a url")


def test_check_rejects_a_response_without_retry_by_default(server):
    _Handler.script = [(200, {"choices": []})]
    with _client(server) as c, pytest.raises(BackendError, match="empty choices") as e:
        c.post("/x", {}, check=lambda d: "empty choices" if not d.get("choices") else None)
    assert e.value.kind == "bad_response" and _Handler.hits == 1


def test_retry_bad_response_retries_malformed_and_checked_bodies(server):
    _Handler.script = [(200, "{trunc"), (200, {"choices": []})]
    c = JsonClient(server, timeout_s=0.3, max_retries=2, backoff_base_s=0.01, retry_bad_response=True, max_connections=2)
    with c:
        out = c.post("/x", {"q": 2}, check=lambda d: None if d.get("echo") else "no echo")
    assert out == {"echo": {"q": 2}} and _Handler.hits == 3


def test_url_example_names_the_expected_form():
    with pytest.raises(ValueError, match="http://host:port/v1"):
        JsonClient("ftp://x", url_example="http://host:port/v1")


# ----------------------------------------------------------------- limits (issue 17)
def _stream(chunks, delay_s=0.0, length=None, headers=None):
    """An action writing `chunks` with `delay_s` between them (no Content-Length unless `length`)."""

    def act(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        if length is not None:
            h.send_header("Content-Length", str(length))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        try:
            for c in chunks:
                h.wfile.write(c)
                h.wfile.flush()
                time.sleep(delay_s)
        except OSError:
            pass  # the client hung up, as it should
        h.close_connection = True

    return act


def test_huge_body_stops_at_the_cap_and_is_not_retried(server):
    chunk = b" " * 65536
    _Handler.script = [_stream([b"["] + [chunk] * 200)] * 3  # 13 MB without a Content-Length
    c = JsonClient(server, timeout_s=2.0, max_retries=2, backoff_base_s=0.01, max_body_bytes=100_000)
    with c, pytest.raises(BackendError) as e:
        c.post("/x", {})
    assert e.value.kind == "body_too_large" and _Handler.hits == 1


def test_declared_huge_body_is_refused_before_reading(server):
    _Handler.script = [_stream([b"{}"], length=10**9)]
    c = JsonClient(server, timeout_s=1.0, max_retries=2, backoff_base_s=0.01, max_body_bytes=1000)
    with c, pytest.raises(BackendError, match="Content-Length") as e:
        c.post("/x", {})
    assert e.value.kind == "body_too_large" and _Handler.hits == 1


def test_gzip_bomb_is_capped_after_inflating(server):
    import gzip

    bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")  # ~5 KB on the wire
    _Handler.script = [(200, bomb, {"Content-Encoding": "gzip"})]
    c = JsonClient(server, timeout_s=1.0, max_retries=0, max_body_bytes=100_000)
    with c, pytest.raises(BackendError) as e:
        c.post("/x", {})
    assert e.value.kind == "body_too_large"


def test_small_gzip_body_is_read(server):
    import gzip

    _Handler.script = [(200, gzip.compress(b'{"ok": 1}'), {"Content-Encoding": "gzip"})]
    with _client(server) as c:
        assert c.post("/x", {}) == {"ok": 1}


def test_trickle_is_cut_at_the_deadline(server):
    # 1 byte per 0.05 s never trips a per-read timeout; the wall-clock limits must
    _Handler.script = [_stream([b"["] + [b" "] * 200, delay_s=0.05)] * 5
    c = JsonClient(server, timeout_s=0.3, max_retries=3, backoff_base_s=0.01, deadline_s=0.5)
    t0 = time.monotonic()
    with c, pytest.raises(BackendError) as e:
        c.post("/x", {})
    assert e.value.kind == "timeout" and time.monotonic() - t0 < 0.8


def test_hang_costs_the_deadline_not_every_retry(server):
    _Handler.script = ["hang"] * 5
    c = JsonClient(server, timeout_s=0.3, max_retries=4, backoff_base_s=0.01)  # deadline 2 * timeout
    t0 = time.monotonic()
    with c, pytest.raises(BackendError) as e:
        c.post("/x", {})
    assert e.value.kind == "timeout" and 0.55 < time.monotonic() - t0 < 0.85


def test_stall_mid_body_is_cut_at_the_attempt_limit(server):
    _Handler.script = [_stream([b'{"a": ', b"1}"], delay_s=2.0)]
    c = JsonClient(server, timeout_s=0.3, max_retries=0)
    t0 = time.monotonic()
    with c, pytest.raises(BackendError) as e:
        c.post("/x", {})
    assert e.value.kind == "timeout" and time.monotonic() - t0 < 0.5


def test_deeply_nested_json_is_bad_response(server):
    _Handler.script = [(200, "[" * 100_000 + "]" * 100_000)]
    with _client(server) as c, pytest.raises(BackendError) as e:
        c.post("/x", {}, required=["x"])
    assert e.value.kind == "bad_response" and "nested" in e.value.detail


def test_nested_json_that_parses_but_breaks_a_check_is_bad_response(server):
    _Handler.script = [(200, "[" * 900 + "]" * 900)]

    def check(data):
        return repr(data)  # recursion inside a caller's check is contained too

    with _client(server) as c, pytest.raises(BackendError) as e:
        c.post("/x", {}, check=check)
    assert e.value.kind == "bad_response"


def test_retry_after_is_honoured_within_the_deadline(server):
    _Handler.script = [(429, {"e": "slow down"}, {"Retry-After": "0.3"})]
    c = JsonClient(server, timeout_s=0.5, max_retries=2, backoff_base_s=0.01, deadline_s=2.0)
    t0 = time.monotonic()
    with c:
        assert c.post("/x", {"a": 1}) == {"echo": {"a": 1}}
    assert time.monotonic() - t0 >= 0.3 and _Handler.hits == 2


def test_retry_after_past_the_deadline_gives_up_at_once(server):
    _Handler.script = [(429, {"e": "slow down"}, {"Retry-After": "60"})]
    c = JsonClient(server, timeout_s=0.5, max_retries=2, backoff_base_s=0.01, deadline_s=1.0)
    t0 = time.monotonic()
    with c, pytest.raises(BackendError) as e:
        c.post("/x", {})
    assert e.value.kind == "http_429" and _Handler.hits == 1 and time.monotonic() - t0 < 0.3


def test_reset_mid_body_is_a_connection_error(server):
    def reset(h):
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b'{"a": [1, 2')
        h.wfile.flush()
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()  # RST
        h.close_connection = True

    _Handler.script = [reset, reset]
    with _client(server, retries=1) as c, pytest.raises(BackendError) as e:
        c.post("/x", {})
    assert e.value.kind == "connection" and _Handler.hits == 2


def test_error_status_reads_only_the_start_of_its_body(server):
    _Handler.script = [(500, b"x" * 5_000_000)]
    with _client(server, retries=0) as c, pytest.raises(BackendError) as e:
        c.post("/x", {})
    assert e.value.kind == "http_500" and len(e.value.detail) <= 200


@pytest.mark.parametrize("kw", [{"timeout_s": 0}, {"deadline_s": -1.0}, {"max_body_bytes": 0}, {"timeout_s": float("nan")}])
def test_non_positive_limits_are_refused(kw):
    with pytest.raises(ValueError, match="positive"):
        JsonClient("http://127.0.0.1:9", **kw)


@pytest.mark.parametrize("value,expected", [("2", 2.0), ("0.5", 0.5), ("-3", 0.0), ("soon", 0.0), (None, 0.0), ("nan", 0.0)])
def test_retry_after_parsing(value, expected):
    from creditgym.envs.http_client import parse_retry_after_s

    assert parse_retry_after_s(value) == expected


def test_retry_after_http_date():
    from email.utils import formatdate

    from creditgym.envs.http_client import parse_retry_after_s

    assert 8.0 < parse_retry_after_s(formatdate(time.time() + 10, usegmt=True)) <= 10.0
