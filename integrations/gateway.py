"""Gateway: an OpenAI-compatible proxy that records any outside agent's exact tokens as Episodes.

    with Gateway("http://127.0.0.1:8000/v1", out_dir="runs/gw") as gw:
        url = gw.session_url("s1")              # the agent's OPENAI_BASE_URL: .../s/s1/v1
        ...                                     # any openai-client script talks to `url`
        gw.set_reward("s1", 1.0)                # or POST .../s/s1/reward {"reward": 1.0}
        episodes = gw.episodes()

Each session has its own base URL path `/s/<session_id>/v1`; `/chat/completions` and `/completions`
are forwarded to the upstream (a vLLM server or `creditgym serve`), streaming chunk by chunk, tool
calls untouched. The gateway asks the upstream for what training needs and the client may not have
asked for (vLLM's `return_token_ids`, `logprobs`, and `return_tokens_as_token_ids` when the client
wants no logprobs of its own) and strips those fields again, so the client gets the shape it asked for.

Each session becomes an Episode when its reward arrives (`assemble_episode`, gateway_episode.py): a
call whose prompt ids extend the previous prompt + completion continues the conversation; one that
does not starts a new row of the per-turn layout.

Added latency: per call one `json.loads` of the request, one of the reply (of each SSE event when
streaming), the recording (list appends under a lock) and one `json.dumps` back; no tokenizer, no
template rendering, no prefix matching (that happens once per session in `assemble_episode`). Both
hops keep connections alive (HTTP/1.1 to the client, a pooled `httpx.Client` upstream) and Nagle is
off, so a call costs two loopback round trips; `creditgym bench gateway` measures the difference.

Upstream faults (connection errors, timeouts, 429, 5xx, a reply that is not JSON) are retried with
exponential backoff (`backoff_base_s * 2**i`), then answered with an OpenAI-shaped error
(`{"error": {"message", "type", "code"}}`, status 502 or the upstream's); an upstream 4xx passes
through at once. A failed call is counted in `meta["gateway"]["errors"]`; the session and its earlier
calls are kept. Finished episodes are appended (one fsynced JSONL line each) to
`out_dir/episodes.jsonl` the moment their reward arrives (`RolloutStore`); sessions still open at
`close()` are written too, marked `train_excluded="no_reward"`.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import re
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from creditgym.envs.http_client import normalize_base_url
from creditgym.integrations.gateway_episode import (
    UNUSABLE,
    CallRecord,
    StreamRecorder,
    assemble_episode,
    choice_tokens,
    reply_records,
    split_rows,
)
from creditgym.store import RolloutStore
from creditgym.trajectory import EXCLUDED, Episode

__all__ = [
    "CallRecord",
    "Gateway",
    "assemble_episode",
    "choice_tokens",
    "client_wants",
    "run_groups",
    "split_rows",
    "upstream_body",
]

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/s/([A-Za-z0-9_.\-]{1,128})(/v1/(chat/completions|completions|models)|/reward)/?$")
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


# ---------------------------------------------------------------------- sessions and the server


@dataclass
class _Session:
    task_id: str = ""
    group_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    calls: list[CallRecord] = field(default_factory=list)
    errors: int = 0


class _UpstreamError(Exception):
    def __init__(self, status: int, body: bytes, message: str):
        super().__init__(message)
        self.status, self.body, self.message = status, body, message


def _error_body(message: str, kind: str = "upstream_error", code: int | str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()


def client_wants(body: Mapping[str, Any], chat: bool) -> tuple[bool, bool]:
    """(logprobs, token ids): what the client's own request asks for and so gets back."""
    logprobs = (
        bool(body.get("logprobs")) if chat else body.get("logprobs") is not None
    )  # completions: 0 asks too
    return logprobs, bool(body.get("return_token_ids"))


def upstream_body(body: Mapping[str, Any], chat: bool) -> dict[str, Any]:
    """The request sent upstream: the client's, plus vLLM's token ids, and logprobs spelled as token
    ids when the client wants none of its own (its own logprobs keep their text tokens)."""
    up = {**body, "return_token_ids": True}
    if not client_wants(body, chat)[0]:
        up["logprobs"] = True if chat else 1
        up["return_tokens_as_token_ids"] = True
    return up


def _shape_for_client(data: dict[str, Any], wants_logprobs: bool, wants_ids: bool) -> None:
    """Drop, in place, what the gateway asked for and the client did not."""
    if not wants_ids:
        data.pop("prompt_token_ids", None)
    for choice in data.get("choices") or []:
        if not wants_logprobs:
            choice["logprobs"] = None
        if not wants_ids:
            choice.pop("token_ids", None)
            choice.pop("prompt_token_ids", None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client's connection is reused across calls
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        self.server.gateway._serve(self, "POST")

    def do_GET(self) -> None:
        self.server.gateway._serve(self, "GET")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("gateway: " + format, *args)

    def send_bytes(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    gateway: Gateway

    def handle_error(
        self, request: Any, client_address: Any
    ) -> None:  # a client that hung up: not ours to print
        log.debug("gateway: connection from %s ended with an error", client_address, exc_info=True)


class Gateway:
    """The proxy (module docstring). `upstream_url` is the upstream's base URL (`http://host:port/v1`);
    `port=0` picks a free port (read `url`); `out_dir` makes finished episodes crash-safe in
    `out_dir/episodes.jsonl`; `api_key` replaces the client's Authorization header upstream."""

    def __init__(
        self,
        upstream_url: str,
        host: str = "127.0.0.1",
        port: int = 0,
        out_dir: str | os.PathLike[str] | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.25,
        max_connections: int = 64,
    ):
        self.upstream_url = normalize_base_url(upstream_url, "http://host:port/v1")
        self.max_retries, self.backoff_base_s = int(max_retries), float(backoff_base_s)
        self.store = RolloutStore(Path(out_dir) / "episodes.jsonl") if out_dir is not None else None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers,
                                    limits=httpx.Limits(max_connections=max_connections,
                                                        max_keepalive_connections=max_connections))  # fmt: skip
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._finished: list[Episode] = []
        self._server = _Server((host, port), _Handler)
        self._server.gateway = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="creditgym-gateway", daemon=True
        )
        self._thread.start()
        self.url = f"http://{host}:{self._server.server_address[1]}"

    # ----------------------------------------------------------------- sessions
    def session_url(self, session_id: str) -> str:
        """The base URL an agent of this session points its OpenAI client at."""
        return f"{self.url}/s/{session_id}/v1"

    def new_session(self, task_id: str = "", group_id: str = "", meta: Mapping[str, Any] | None = None,
                    session_id: str | None = None) -> str:  # fmt: skip
        """Open a session (an agent may also open one by calling an unknown id); returns its id."""
        sid = session_id or uuid.uuid4().hex[:16]
        if not _PATH.match(f"/s/{sid}/reward"):
            raise ValueError(f"session id {sid!r}: use 1-128 letters, digits, '_', '.' or '-'")
        with self._lock:
            if sid in self._sessions:
                raise ValueError(
                    f"session {sid!r} is already open; give a new id or let new_session pick one"
                )
            self._sessions[sid] = _Session(task_id, group_id or sid, dict(meta or {}))
        return sid

    def open_sessions(self) -> list[str]:
        """Ids of the sessions waiting for their reward."""
        with self._lock:
            return list(self._sessions)

    def calls(self, session_id: str) -> list[CallRecord]:
        """The calls recorded so far in an open session."""
        with self._lock:
            return list(self._session(session_id).calls)

    def set_reward(self, session_id: str, reward: float, meta: Mapping[str, Any] | None = None) -> Episode:
        """Finish a session with its reward: assemble, store (when `out_dir`), and queue for `episodes()`."""
        with self._lock:
            s = self._sessions.pop(session_id, None)
        if s is None:
            raise KeyError(
                f"no open session {session_id!r}; open one with new_session() or by calling its URL"
            )
        ep = assemble_episode(s.calls, reward, session_id=session_id, task_id=s.task_id, group_id=s.group_id,
                              meta={**s.meta, **dict(meta or {})}, errors=s.errors)  # fmt: skip
        if self.store is not None:
            self.store.append(ep)
        with self._lock:
            self._finished.append(ep)
        return ep

    def episodes(self, session_ids: Sequence[str] | None = None) -> list[Episode]:
        """Finished episodes (those of `session_ids` only, in that order, when given), removed from the queue."""
        with self._lock:
            if session_ids is None:
                out, self._finished = self._finished, []
                return out
            by_id = {e.meta["gateway"]["session_id"]: e for e in self._finished}
            out = [by_id[s] for s in session_ids if s in by_id]
            taken = {id(e) for e in out}
            self._finished = [e for e in self._finished if id(e) not in taken]
            return out

    def _session(self, sid: str) -> _Session:  # caller holds the lock
        if sid not in self._sessions:
            self._sessions[sid] = _Session(group_id=sid)
        return self._sessions[sid]

    def close(self) -> None:
        """Stop serving; sessions still open are stored as `train_excluded="no_reward"` when `out_dir`."""
        self._server.shutdown()
        self._server.server_close()
        self._client.close()
        with self._lock:
            left, self._sessions = self._sessions, {}
        if self.store is not None and left:
            self.store.extend(
                assemble_episode(s.calls, 0.0, session_id=sid, task_id=s.task_id, group_id=s.group_id,
                                 meta={**s.meta, EXCLUDED: "no_reward"}, errors=s.errors)
                for sid, s in left.items() if s.calls
            )  # fmt: skip

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- HTTP
    def _serve(self, h: _Handler, method: str) -> None:
        m = _PATH.match(h.path.split("?", 1)[0])
        try:
            n = int(h.headers.get("Content-Length") or 0)
            raw = h.rfile.read(n) if n else b""
            if not m:
                h.send_bytes(
                    404,
                    _error_body(
                        f"no route {h.path}; agents use {self.url}/s/<session_id>/v1", "not_found", 404
                    ),
                )
            elif m.group(3) == "models":
                self._models(h)
            elif method != "POST":
                h.send_bytes(405, _error_body(f"{h.path} takes POST", "invalid_request_error", 405))
            elif m.group(2) == "/reward":
                self._reward(h, m.group(1), raw)
            else:
                self._forward(h, m.group(1), m.group(3), raw)
        except (BrokenPipeError, ConnectionResetError):
            log.info("gateway: the client of %s hung up", h.path)
        except Exception as e:  # a proxy must answer, never die: report it in the OpenAI shape
            log.exception("gateway: internal error on %s", h.path)
            try:
                h.send_bytes(
                    500, _error_body(f"gateway internal error: {type(e).__name__}: {e}", "gateway_error", 500)
                )
            except OSError:
                pass

    def _reward(self, h: _Handler, sid: str, raw: bytes) -> None:
        try:
            data = json.loads(raw or b"{}")
            reward = float(data["reward"])
        except (ValueError, KeyError, TypeError):
            h.send_bytes(400, _error_body('send {"reward": <number>}', "invalid_request_error", 400))
            return
        try:
            ep = self.set_reward(
                sid, reward, meta=data.get("meta") if isinstance(data.get("meta"), dict) else None
            )
        except KeyError as e:
            h.send_bytes(404, _error_body(str(e), "not_found", 404))
            return
        h.send_bytes(200, json.dumps({"episode_id": ep.episode_id, "turns": ep.num_turns}).encode())

    def _models(self, h: _Handler) -> None:
        try:
            r = self._with_retries(lambda: self._client.get(f"{self.upstream_url}/models"))
            h.send_bytes(r.status_code, r.content)
        except _UpstreamError as e:
            h.send_bytes(e.status, e.body)

    def _with_retries(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        """`send()` until a reply that is not a retryable fault; _UpstreamError after the retries."""
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_base_s * 2 ** (attempt - 1))
            try:
                r = send()
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code in _RETRY_STATUS:
                last = f"HTTP {r.status_code}: {r.read()[:200]!r}"
                r.close()
                continue
            return r
        msg = f"upstream {self.upstream_url} failed after {self.max_retries + 1} attempts ({last})"
        raise _UpstreamError(502, _error_body(msg, "upstream_error", 502), msg)

    def _forward(self, h: _Handler, sid: str, route: str, raw: bytes) -> None:
        chat = route == "chat/completions"
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as e:
            h.send_bytes(400, _error_body(f"request body: {e}", "invalid_request_error", 400))
            return
        wants_lp, wants_ids = client_wants(body, chat)
        payload = json.dumps(upstream_body(body, chat)).encode()
        headers = {"Content-Type": "application/json"}
        if h.headers.get("Authorization") and "Authorization" not in self._client.headers:
            headers["Authorization"] = h.headers["Authorization"]
        url = f"{self.upstream_url}/{route}"
        try:
            if body.get("stream"):
                self._stream(h, sid, url, payload, headers, body, chat, wants_lp, wants_ids)
                return
            r = self._with_retries(lambda: self._client.post(url, content=payload, headers=headers))
            if (
                r.status_code >= 400
            ):  # a 4xx other than 408/429: the request is wrong, say so as the upstream did
                h.send_bytes(r.status_code, r.content)
                return
        except _UpstreamError as e:
            self._count_error(sid)
            h.send_bytes(e.status, e.body)
            return
        try:
            data = json.loads(r.content)
        except ValueError:
            self._count_error(sid)
            h.send_bytes(
                502, _error_body(f"upstream reply is not JSON: {r.text[:200]}", "upstream_error", 502)
            )
            return
        recs = reply_records(data, body, chat)
        with self._lock:
            self._session(sid).calls.extend(recs if recs is not None else [UNUSABLE])
        if recs is None:  # a shape the gateway cannot read goes to the client as it came
            log.warning("gateway: session %s: unreadable upstream reply, its episode will be excluded", sid)
            h.send_bytes(200, r.content)
            return
        _shape_for_client(data, wants_lp, wants_ids)
        h.send_bytes(200, json.dumps(data).encode())

    def _count_error(self, sid: str) -> None:
        with self._lock:
            self._session(sid).errors += 1

    def _stream(self, h: _Handler, sid: str, url: str, payload: bytes, headers: dict[str, str],
                body: Mapping[str, Any], chat: bool, wants_lp: bool, wants_ids: bool) -> None:  # fmt: skip
        """Pass SSE events through one by one while collecting each choice's ids, logprobs and text."""
        req = self._client.build_request("POST", url, content=payload, headers=headers)
        try:
            r = self._with_retries(lambda: self._client.send(req, stream=True))
        except _UpstreamError as e:
            self._count_error(sid)
            h.send_bytes(e.status, e.body)
            return
        try:
            if r.status_code >= 400:
                h.send_bytes(r.status_code, r.read())
                return
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Cache-Control", "no-cache")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            rec = StreamRecorder(body, chat)
            recorded = False

            def record() -> None:  # before the client can see the end of the stream, so that a
                nonlocal recorded  # client reading `calls()` right after its last chunk finds it
                if not recorded:
                    recorded = True
                    recs = rec.records()
                    with self._lock:
                        self._session(sid).calls.extend(recs)

            try:
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    text = line[5:].strip()
                    data = None if text == "[DONE]" else json.loads(text)
                    if data is None:
                        record()
                    elif rec.add(data):
                        _shape_for_client(data, wants_lp, wants_ids)
                        text = json.dumps(data)
                    h.send_chunk(f"data: {text}\n\n".encode())
            except (
                httpx.HTTPError,
                ValueError,
            ) as e:  # the upstream broke mid-stream: say so, keep the session
                self._count_error(sid)
                error = _error_body(f"upstream stream broke: {e}", "upstream_error", 502)
                h.send_chunk(b"data: " + error + b"\n\n")
                h.send_chunk(b"")
                return
            record()
            h.send_chunk(b"")
        finally:
            r.close()


# ---------------------------------------------------------------------- the driver

AgentFn = Callable[[str, Any], "float | None"]


def _task_id(task: Any) -> str:
    return str(task.get("task_id", "")) if isinstance(task, Mapping) else str(task)


def _run_command(command: str | Sequence[str], url: str, reward_url: str, task: Any, timeout_s: float,
                 extra_env: Mapping[str, str]) -> float | None:  # fmt: skip
    """Run the agent command with the session's URL in OPENAI_BASE_URL; its last stdout line, when a number, is the reward."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    env = {**os.environ, **extra_env, "OPENAI_BASE_URL": url, "CREDITGYM_REWARD_URL": reward_url,
           "CREDITGYM_TASK": json.dumps(task)}  # fmt: skip
    env.setdefault("OPENAI_API_KEY", "creditgym")
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"agent command {argv} exited {out.returncode}: {out.stderr[-500:]}")
    last = (out.stdout.strip().splitlines() or [""])[-1]
    try:
        return float(last)
    except ValueError:
        return None  # it posted its reward to CREDITGYM_REWARD_URL itself


def run_groups(
    agent: AgentFn | str | Sequence[str],
    tasks: Sequence[Any],
    group_size: int,
    gateway: Gateway,
    *,
    max_workers: int = 8,
    timeout_s: float = 600.0,
    env: Mapping[str, str] | None = None,
) -> list[Episode]:
    """Run the outside agent `group_size` times per task, each run its own session, and return the
    episodes in task order, a group's episodes sharing a `group_id`.

    `agent` is a callable `agent(base_url, task) -> reward or None`, or a command (string or argv)
    run with `OPENAI_BASE_URL`, `CREDITGYM_TASK` (the task as JSON), `CREDITGYM_REWARD_URL` and `env`
    set, whose last stdout line is its reward. A run that returns None must have posted its reward to
    the session's reward endpoint. A run that raises, or leaves no reward, gives an episode marked
    `train_excluded="agent_error"` (its group is then dropped by the trainer, and reported)."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    sessions: list[tuple[str, Any]] = []
    for task in tasks:
        gid = f"{_task_id(task) or 'task'}-{uuid.uuid4().hex[:8]}"
        for _ in range(group_size):
            sessions.append(
                (gateway.new_session(task_id=_task_id(task), group_id=gid, meta={"task": task}), task)
            )

    def play(sid: str, task: Any) -> None:
        url = gateway.session_url(sid)
        try:
            if callable(agent):
                reward = agent(url, task)
            else:
                reward = _run_command(agent, url, f"{gateway.url}/s/{sid}/reward", task, timeout_s, env or {})
        except Exception as e:  # the agent is outside code: its failure is data, not our crash
            log.warning("gateway agent run %s failed: %s", sid, e)
            gateway.set_reward(
                sid, 0.0, meta={EXCLUDED: "agent_error", "agent_error": f"{type(e).__name__}: {e}"}
            )
            return
        if reward is not None:
            gateway.set_reward(sid, float(reward))
        elif sid in gateway.open_sessions():
            gateway.set_reward(sid, 0.0, meta={EXCLUDED: "agent_error", "agent_error": "no reward given"})

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(sessions)))) as pool:
        list(pool.map(lambda s: play(*s), sessions))
    return gateway.episodes([sid for sid, _ in sessions])
