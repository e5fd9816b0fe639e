"""OpenAIPolicy against a fake OpenAI-compatible server on 127.0.0.1 that also misbehaves."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditgym.agents import ByteTokenizer, Context, OpenAIPolicy, Sampling
from creditgym.agents.openai import OpenAIError


class FakeServer:
    """Serves /v1/chat/completions and /v1/completions. `modes` is a queue of behaviours for the next
    requests (ok, slow, 500, 429, badjson, nochoices, disconnect, 400); it answers "ok" when empty."""

    def __init__(self, delay_s: float = 0.0, stop_reason: bool = True):
        self.modes: deque[str] = deque()
        self.junk: object = None  # the reply of mode "junk"
        self.bodies: list[dict] = []
        self.delay_s, self.stop_reason = delay_s, stop_reason
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.bodies.append({"path": self.path, **body})
                    mode = fake.modes.popleft() if fake.modes else "ok"
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    fake.answer(self, mode, body)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, h, mode: str, body: dict) -> None:
        if mode == "disconnect":
            h.close_connection = True
            return
        if mode == "slow":
            time.sleep(1.0)
        if mode in ("500", "429", "400"):
            return self._send(h, int(mode), b'{"error": "nope"}')
        if mode == "badjson":
            return self._send(h, 200, b'{"choices": [')
        if mode == "nochoices":
            return self._send(h, 200, b'{"choices": []}')
        if mode == "junk":
            return self._send(h, 200, json.dumps(self.junk).encode())
        time.sleep(self.delay_s)
        self._send(h, 200, json.dumps(self.reply(body)).encode())

    @staticmethod
    def _send(h, status: int, payload: bytes) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def reply(self, body: dict) -> dict:
        if "messages" in body:
            full = f"<answer>{body['messages'][-1]['content']}</answer>"
        else:
            prompt = body["prompt"]
            full = "ids:" + str(len(prompt)) if isinstance(prompt, list) else "text:" + prompt[-3:]
        choice: dict = {"index": 0, "finish_reason": "stop"}
        stop = next((s for s in body.get("stop", []) if s in full), None)
        text = full
        if stop is not None:
            text = full[: full.index(stop) + len(stop)]
            if not body.get("include_stop_str_in_output"):
                text = text[: -len(stop)]
                if self.stop_reason:
                    choice["stop_reason"] = stop
        if len(text) > body["max_tokens"]:
            text, choice["finish_reason"] = text[: body["max_tokens"]], "length"
        as_ids = body.get("return_tokens_as_token_ids")
        toks = [f"token_id:{ord(c)}" if as_ids else c for c in text]
        if "messages" in body:
            choice["message"] = {"role": "assistant", "content": text}
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [{"token": t, "logprob": -0.25} for t in toks]}
        else:
            choice["text"] = text
            if body.get("logprobs"):
                choice["logprobs"] = {"tokens": toks, "token_logprobs": [-0.5] * len(toks)}
        return {"id": "x", "object": "chat.completion", "choices": [choice]}


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


def _policy(fake: FakeServer, **kw) -> OpenAIPolicy:
    kw = {"timeout_s": 0.5, "backoff_base_s": 0.01, "max_retries": 3, **kw}
    return OpenAIPolicy(fake.url, "fake-model", **kw)


def _ctx(text: str) -> Context:
    return Context(ids=list(text.encode()), messages=[{"role": "user", "content": text}], obs_texts=[text])


def test_chat_request_and_byte_tokenized_reply(server):
    with _policy(server) as policy:
        gens = policy.generate(
            [_ctx("hi"), _ctx("yo")], Sampling(temperature=0.7, top_p=0.9, max_new_tokens=50, seed=5)
        )
    assert [g.text for g in gens] == ["<answer>hi</answer>", "<answer>yo</answer>"]
    tok = ByteTokenizer()
    assert gens[0].token_ids == (*b"<answer>hi</answer>", tok.eos_token_id)  # model ended its turn
    assert gens[0].logprobs == (0.0,) * len(gens[0].token_ids)  # server tokens do not align with bytes
    assert all(g.finish_reason == "stop" for g in gens)
    bodies = sorted(server.bodies, key=lambda b: b["seed"])
    assert bodies[0]["path"] == "/v1/chat/completions" and bodies[0]["model"] == "fake-model"
    assert (bodies[0]["temperature"], bodies[0]["top_p"], bodies[0]["max_tokens"]) == (0.7, 0.9, 50)
    assert [b["seed"] for b in bodies] == [5, 6] and bodies[0]["logprobs"] is True


def test_stop_string_is_restored_and_length_reported(server):
    policy = _policy(server)
    g = policy.generate([_ctx("q")], Sampling(stop=("</answer>",)))[0]
    assert g.text == "<answer>q</answer>" and g.finish_reason == "stop"
    assert g.token_ids == tuple(b"<answer>q</answer>")  # a stop string, not EOS, ended it
    short = policy.generate([_ctx("long question")], Sampling(max_new_tokens=5))[0]
    assert short.text == "<answ" and short.finish_reason == "length"
    assert server.bodies[0]["stop"] == ["</answer>"]


def test_vllm_server_token_ids_and_logprobs(server):
    tok = ByteTokenizer()
    policy = _policy(server, server="vllm", tokenizer=tok)
    g = policy.generate([_ctx("x")], Sampling(stop=("</answer>",), top_k=7))[0]
    assert g.text == "<answer>x</answer>"
    assert g.token_ids == tuple(b"<answer>x</answer>") and g.logprobs == (-0.25,) * len(g.token_ids)
    body = server.bodies[0]
    assert body["top_k"] == 7 and body["include_stop_str_in_output"] and body["return_tokens_as_token_ids"]


def test_completions_sends_ids_with_local_tokenizer_else_text(server):
    with_tok = _policy(server, api="completions", tokenizer=ByteTokenizer())
    g = with_tok.generate([_ctx("abcd")], Sampling())[0]
    assert server.bodies[-1]["prompt"] == list(b"abcd") and g.text == "ids:4"
    assert g.logprobs[:5] == (-0.5,) * 5  # local tokenizer agrees with the server's token count
    plain = _policy(server, api="completions")
    g2 = plain.generate([_ctx("abcd")], Sampling())[0]
    assert server.bodies[-1]["prompt"] == "abcd" and g2.text == "text:bcd"
    assert server.bodies[-1]["path"] == "/v1/completions" and server.bodies[-1]["logprobs"] == 1


def test_retries_through_500_429_bad_json_empty_choices_and_disconnect(server):
    server.modes.extend(["500", "429", "badjson", "nochoices", "disconnect"])
    policy = _policy(server, max_retries=5)
    g = policy.generate([_ctx("ok")], Sampling())[0]
    assert g.text == "<answer>ok</answer>"
    assert len(server.bodies) == 6


def test_slow_server_times_out_then_retries(server):
    server.modes.extend(["slow"])
    policy = _policy(server, timeout_s=0.3)
    assert policy.generate([_ctx("a")], Sampling())[0].text == "<answer>a</answer>"
    server.modes.extend(["slow"] * 3)
    with pytest.raises(OpenAIError, match="timeout") as err:
        _policy(server, timeout_s=0.3, max_retries=2).generate([_ctx("b")], Sampling())
    assert err.value.kind == "timeout"


def test_client_errors_fail_at_once_or_become_empty(server):
    server.modes.extend(["400"])
    with pytest.raises(OpenAIError, match="http_400"):
        _policy(server).generate([_ctx("a")], Sampling())
    assert len(server.bodies) == 1
    server.modes.extend(["500"] * 3)
    g = _policy(server, max_retries=2, on_error="empty").generate([_ctx("a")], Sampling())[0]
    assert g == type(g)((), (), "", "error")
    assert len(server.bodies) == 4


def test_concurrency_limit_and_order():
    server = FakeServer(delay_s=0.1)
    try:
        policy = _policy(server, max_concurrency=3)
        gens = policy.generate([_ctx(str(i)) for i in range(9)], Sampling())
        assert [g.text for g in gens] == [f"<answer>{i}</answer>" for i in range(9)]
        assert 2 <= server.max_in_flight <= 3
    finally:
        server.close()


def test_bad_arguments_are_explained(server):
    with pytest.raises(ValueError, match="base_url"):
        OpenAIPolicy("localhost:8000", "m")
    with pytest.raises(ValueError, match="api must be"):
        OpenAIPolicy(server.url, "m", api="responses")
    with pytest.raises(ValueError, match=r"Context\.messages"):
        _policy(server).generate([Context(ids=[1, 2])], Sampling())
    assert _policy(server).generate([], Sampling()) == []


# ----------------------------------------------------------------- malformed replies (issue 17)
_CHAT_JUNK = [
    {"message": "hello"},  # message not an object
    {"message": {"content": 7}},  # non-string content
    {"message": {"content": ["a"]}},
    {"message": {"content": "a"}, "logprobs": [1, 2]},  # logprobs not an object
    {"message": {"content": "a"}, "logprobs": {"content": {"token": "a"}}},  # content not a list
    {"message": {"content": "a"}, "logprobs": {"content": [{"token": "a", "logprob": None}]}},  # null logprob
    {"message": {"content": "a"}, "logprobs": {"content": [{"token": "a", "logprob": "x"}]}},
    {"message": {"content": "a"}, "logprobs": {"content": [{"token": 3, "logprob": -1.0}]}},
    {"message": {"content": "a"}, "logprobs": {"content": ["a"]}},
    {"message": {"content": "a"}, "token_ids": ["1"]},  # token ids of the wrong type
    {"message": {"content": "a"}, "token_ids": [1.5]},
    {"message": {"content": "a"}, "token_ids": 5},
]
_COMPLETION_JUNK = [
    {"text": 3},
    {"text": "a", "logprobs": "x"},
    {"text": "a", "logprobs": {"tokens": "abc"}},
    {"text": "a", "logprobs": {"tokens": ["a"], "token_logprobs": ["x"]}},
    {"text": "a", "logprobs": {"tokens": [1], "token_logprobs": [-1.0]}},
    {"text": "a", "token_ids": [True]},
]


@pytest.mark.parametrize("api,choice", [("chat", c) for c in _CHAT_JUNK] + [("completions", c) for c in _COMPLETION_JUNK])
def test_malformed_reply_is_bad_response_and_honours_on_error(server, api, choice):
    server.junk = {"choices": [choice]}
    server.modes.extend(["junk"] * 4)
    policy = _policy(server, api=api, max_retries=1, tokenizer=ByteTokenizer())
    with pytest.raises(OpenAIError) as err:
        policy.generate([_ctx("a")], Sampling())
    assert err.value.kind == "bad_response"
    g = _policy(server, api=api, max_retries=0, on_error="empty").generate([_ctx("a")], Sampling())[0]
    assert g == type(g)((), (), "", "error")


def test_null_message_and_content_still_read_as_empty_text(server):
    server.junk = {"choices": [{"message": {"content": None}, "finish_reason": "length"}]}
    server.modes.append("junk")
    g = _policy(server).generate([_ctx("a")], Sampling())[0]
    assert (g.text, g.finish_reason, g.token_ids) == ("", "length", ())


def test_huge_reply_is_body_too_large_without_retry(server):
    server.junk = {"choices": [{"message": {"content": "x" * 200_000}}]}
    server.modes.extend(["junk"] * 4)
    policy = _policy(server, on_error="empty", max_body_bytes=50_000)
    g = policy.generate([_ctx("a")], Sampling())[0]
    assert g.finish_reason == "error" and len(server.bodies) == 1


def test_deadline_bounds_a_request_across_its_retries(server):
    server.modes.extend(["slow"] * 4)  # each attempt outlasts timeout_s
    policy = _policy(server, timeout_s=0.2, max_retries=3, deadline_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(OpenAIError) as err:
        policy.generate([_ctx("a")], Sampling())
    assert err.value.kind == "timeout" and time.monotonic() - t0 < 0.6 and len(server.bodies) == 2


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
_entry = st.fixed_dictionaries({}, optional={"token": _json, "logprob": _json})
_choice = st.fixed_dictionaries(
    {},
    optional={
        "message": _json | st.fixed_dictionaries({}, optional={"content": _json}),
        "text": _json,
        "logprobs": _json
        | st.fixed_dictionaries({}, optional={"content": _json | st.lists(_entry | _json, max_size=3),
                                              "tokens": _json, "token_logprobs": _json | st.lists(_json, max_size=3)}),
        "token_ids": _json | st.lists(_json, max_size=3),
        "finish_reason": _json,
        "stop_reason": _json,
    },
)
_reply = _json | st.fixed_dictionaries({"choices": _json | st.lists(_choice | _json, min_size=1, max_size=2)})


_PARSERS = {(api, local): OpenAIPolicy("http://127.0.0.1:9/v1", "m", api=api, tokenizer=ByteTokenizer() if local else None)
            for api in ("chat", "completions") for local in (False, True)}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_reply, api=st.sampled_from(["chat", "completions"]), local=st.booleans())
def test_random_junk_replies_raise_only_openai_error(data, api, local):
    policy = _PARSERS[api, local]
    try:
        g = policy._parse(data, Sampling(stop=("</answer>",)))
    except OpenAIError as e:
        assert e.kind == "bad_response"
    else:
        assert len(g.token_ids) == len(g.logprobs) and isinstance(g.text, str)
        assert all(isinstance(i, int) for i in g.token_ids) and all(isinstance(x, float) for x in g.logprobs)
