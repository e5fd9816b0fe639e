"""JsonClient: the one HTTP client real backends use (httpx + tenacity).

Retries timeouts, transport errors, 429 and 5xx with exponential backoff (`backoff_base_s * 2**i`,
capped at 8 s; a `Retry-After` of a 429/503 lengthens the wait); other 4xx fail at once. Every call
has one wall-clock `deadline_s` covering all its attempts, connects, backoffs and body reads, and
each attempt at most `timeout_s` of it; bodies are streamed and cut at `max_body_bytes`. After the
retries every failure is a `BackendError` whose `kind` is stable (`timeout`, `connection`,
`http_<status>`, `bad_response`, `body_too_large`), which TextEnv turns into an error observation.
Configuration errors (a malformed URL, a non-positive limit) raise ValueError at construction.
docs/backends.md describes the limits.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import json
import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from creditgym.envs.base import BackendError

if TYPE_CHECKING:  # httpx and tenacity load with the first client, so `import creditgym` stays fast
    import httpx
    import tenacity

__all__ = ["DEFAULT_MAX_BODY_BYTES", "JsonClient", "normalize_base_url", "preview"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 16 * 2**20
"""Largest response body JsonClient reads (16 MiB); a longer one is `body_too_large`, not retried."""
_ERROR_BODY_BYTES = 4096  # an error status only needs the start of its body for the message
_MAX_BACKOFF_S = 8.0


def normalize_base_url(base_url: str, example: str = "http://host:port") -> str:
    """`base_url` without a trailing slash; ValueError (naming `example`) unless it is http(s) with a host."""
    import httpx

    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"base_url must look like {example}, got {base_url!r}")
    return str(url).rstrip("/")


def preview(obj: Any, n: int = 200) -> str:
    """The first `n` characters of `str(obj)` for an error message; safe on deeply nested data."""
    try:
        return str(obj)[:n]
    except RecursionError:
        return f"<{type(obj).__name__} nested too deeply to show>"


class _Retryable(Exception):
    def __init__(self, err: BackendError, retry_after_s: float = 0.0):
        super().__init__(str(err))
        self.err = err
        self.retry_after_s = retry_after_s


def parse_retry_after_s(value: str | None) -> float:
    """Seconds asked for by a `Retry-After` header (delta-seconds or an HTTP date); 0 when absent or unreadable."""
    if not value:
        return 0.0
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else 0.0


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: httpx.Headers
    body: bytes


Check = Callable[[Any], "str | None"]
"""A response check: the problem with a decoded response (a `bad_response`), or None when it is fine."""


class JsonClient:
    """POST/GET JSON to `base_url` with bounded retries; returns the decoded JSON object.

    `timeout_s`: wall-clock limit of one attempt (connect, send, headers and the whole body);
    `deadline_s`: wall-clock limit of the whole call across attempts and backoffs (default
    `2 * timeout_s`, so a hanging server costs two timeouts, not `max_retries + 1`);
    `max_body_bytes`: longest body read (decoded), longer is `body_too_large` and not retried;
    `retry_bad_response`: also retry responses that are not JSON or fail their check (servers that
    sometimes truncate a body under load); `max_connections` bounds the pool for threaded callers;
    `url_example` is shown when `base_url` is malformed."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        headers: dict[str, str] | None = None,
        *,
        deadline_s: float | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_connections: int | None = None,
        retry_bad_response: bool = False,
        url_example: str = "http://host:port",
    ):
        self.base_url = normalize_base_url(base_url, example=url_example)
        self.timeout_s = float(timeout_s)
        self.deadline_s = 2.0 * self.timeout_s if deadline_s is None else float(deadline_s)
        self.max_body_bytes = int(max_body_bytes)
        for name, v in (("timeout_s", self.timeout_s), ("deadline_s", self.deadline_s), ("max_body_bytes", self.max_body_bytes)):
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        self.max_retries = int(max_retries)
        self.backoff_base_s = float(backoff_base_s)
        self.retry_bad_response = bool(retry_bad_response)
        import httpx

        kw: dict[str, Any] = {}
        if max_connections is not None:
            n = max(1, int(max_connections))
            kw["limits"] = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        hdrs = {"Accept-Encoding": "gzip, deflate, identity", **(headers or {})}
        self._client = httpx.Client(base_url=self.base_url, timeout=self.timeout_s, headers=hdrs, **kw)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> JsonClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def post(self, path: str, payload: Any, required: Sequence[str] = (), check: Check | None = None) -> Any:
        """POST `payload` as JSON; `required` lists top-level keys the response must have and `check`
        may reject a response for another reason."""
        return self._request("POST", path, payload, required, check)

    def get(self, path: str, required: Sequence[str] = (), check: Check | None = None) -> Any:
        return self._request("GET", path, None, required, check)

    # ------------------------------------------------------------------ one attempt
    def _read(self, method: str, path: str, payload: Any, stop_at: float, abort: threading.Event) -> _Reply:
        """Send and stream the reply, at most `max_body_bytes` of it (4 KiB for an error status)."""
        import httpx

        timeout = httpx.Timeout(max(1e-3, stop_at - time.monotonic()))
        with self._client.stream(method, path, json=payload, timeout=timeout) as resp:
            cap = self.max_body_bytes if resp.status_code < 400 else _ERROR_BODY_BYTES
            declared = resp.headers.get("content-length", "")
            if resp.status_code < 400 and declared.isdigit() and int(declared) > cap:
                raise BackendError("body_too_large", f"{method} {path}: Content-Length {declared} > max_body_bytes={cap}")
            encoding = resp.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("identity", "gzip", "deflate", "x-gzip"):
                raise BackendError("bad_response", f"unsupported Content-Encoding {encoding!r}")
            inflate = None if encoding == "identity" else zlib.decompressobj(47 if "gzip" in encoding else 15)
            body = bytearray()
            for chunk in resp.iter_raw():
                if abort.is_set() or time.monotonic() > stop_at:
                    raise _Retryable(BackendError("timeout", f"{method} {path}: body not complete within the time limit"))
                if inflate is not None:  # bounded inflate: a small gzip body cannot expand past the cap
                    chunk = inflate.decompress(chunk, cap + 1 - len(body))
                body += chunk
                if len(body) > cap:
                    if resp.status_code >= 400:
                        break
                    raise BackendError("body_too_large", f"{method} {path}: body exceeds max_body_bytes={cap}")
            if inflate is not None and len(body) <= cap:
                body += inflate.flush()
            return _Reply(resp.status_code, resp.headers, bytes(body))

    def _exchange(self, method: str, path: str, payload: Any, stop_at: float) -> _Reply:
        """`_read` in a daemon thread so a trickling or stalled server cannot hold the caller past
        `stop_at`: the caller stops waiting then, and the thread stops at its next chunk or read timeout."""
        import httpx

        fut: concurrent.futures.Future[_Reply] = concurrent.futures.Future()
        abort = threading.Event()

        def run() -> None:
            try:
                fut.set_result(self._read(method, path, payload, stop_at, abort))
            except BaseException as e:  # handed to the caller, who maps it
                fut.set_exception(e)

        threading.Thread(target=run, name="creditgym-http", daemon=True).start()
        what = f"{method} {self.base_url}{path}"
        try:
            return fut.result(timeout=max(0.0, stop_at - time.monotonic()))
        except concurrent.futures.TimeoutError:
            abort.set()
            raise _Retryable(BackendError("timeout", f"{what}: no complete answer within the time limit")) from None
        except httpx.TimeoutException as e:
            raise _Retryable(BackendError("timeout", f"{what}: no answer within the time limit ({e})")) from e
        except httpx.TransportError as e:
            raise _Retryable(BackendError("connection", f"{what}: {e}")) from e
        except zlib.error as e:
            raise BackendError("bad_response", f"{what}: body does not inflate ({e})") from e

    def _bad(self, detail: str) -> Exception:
        err = BackendError("bad_response", detail)
        return _Retryable(err) if self.retry_bad_response else err

    def _once(self, method: str, path: str, payload: Any, required: Sequence[str], check: Check | None,
              deadline: float) -> Any:
        reply = self._exchange(method, path, payload, min(deadline, time.monotonic() + self.timeout_s))
        text = reply.body[:200].decode("utf-8", "replace")
        if reply.status == 429 or reply.status >= 500:
            wait_s = parse_retry_after_s(reply.headers.get("retry-after")) if reply.status in (429, 503) else 0.0
            raise _Retryable(BackendError(f"http_{reply.status}", text), retry_after_s=wait_s)
        if reply.status >= 400:
            raise BackendError(f"http_{reply.status}", text)
        try:
            data = json.loads(reply.body)
        except RecursionError:
            raise self._bad(f"JSON nested too deeply: {text!r}") from None
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            raise self._bad(f"not JSON: {text!r}") from e
        try:
            missing = [k for k in required if not isinstance(data, dict) or k not in data]
            if missing:
                raise self._bad(f"response lacks {missing}: {preview(data)}")
            problem = check(data) if check is not None else None
        except RecursionError:
            raise self._bad(f"JSON nested too deeply: {text!r}") from None
        if problem:
            raise self._bad(problem)
        return data

    def _wait_s(self, state: tenacity.RetryCallState) -> float:
        backoff = min(_MAX_BACKOFF_S, self.backoff_base_s * 2 ** (state.attempt_number - 1))
        err = state.outcome.exception() if state.outcome is not None else None
        return max(backoff, err.retry_after_s if isinstance(err, _Retryable) else 0.0)

    def _request(self, method: str, path: str, payload: Any, required: Sequence[str], check: Check | None) -> Any:
        import tenacity

        deadline = time.monotonic() + self.deadline_s

        def stop(state: tenacity.RetryCallState) -> bool:  # out of attempts, or the wait would pass the deadline
            return state.attempt_number > self.max_retries or time.monotonic() + state.upcoming_sleep >= deadline

        retrying = tenacity.Retrying(stop=stop, wait=self._wait_s, retry=tenacity.retry_if_exception_type(_Retryable),
                                     reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(method, path, payload, required, check, deadline)
        except _Retryable as e:
            n = retrying.statistics.get("attempt_number", 1)
            log.warning("backend %s%s failed after %d attempt(s): %s", self.base_url, path, n, e.err)
            raise e.err from None
        raise AssertionError("unreachable")  # pragma: no cover
