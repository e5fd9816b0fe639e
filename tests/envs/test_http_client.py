"""JsonClient against a fake server on 127.0.0.1: retries, timeouts, bad JSON, no retry on 4xx."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from creditgym.envs import BackendError
from creditgym.envs._http import JsonClient


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
        status, payload = action
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
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
