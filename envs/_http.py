"""JsonClient: the one HTTP client real backends use (httpx + tenacity).

Retries timeouts, transport errors, 429 and 5xx with exponential backoff (`backoff_base_s * 2**i`,
capped at 8 s); other 4xx fail at once. After the retries every failure is a `BackendError` whose
`kind` is stable (`timeout`, `connection`, `http_<status>`, `bad_response`), which TextEnv turns into
an error observation. Configuration errors (a malformed URL) raise ValueError at construction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import tenacity

from creditgym.envs.base import BackendError

__all__ = ["JsonClient", "normalize_base_url"]

log = logging.getLogger(__name__)


def normalize_base_url(base_url: str, example: str = "http://host:port") -> str:
    """`base_url` without a trailing slash; ValueError (naming `example`) unless it is http(s) with a host."""
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"base_url must look like {example}, got {base_url!r}")
    return str(url).rstrip("/")


class _Retryable(Exception):
    def __init__(self, err: BackendError):
        super().__init__(str(err))
        self.err = err


Check = Callable[[Any], "str | None"]
"""A response check: the problem with a decoded response (a `bad_response`), or None when it is fine."""


class JsonClient:
    """POST/GET JSON to `base_url` with bounded retries; returns the decoded JSON object.

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
        max_connections: int | None = None,
        retry_bad_response: bool = False,
        url_example: str = "http://host:port",
    ):
        self.base_url = normalize_base_url(base_url, example=url_example)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_base_s = float(backoff_base_s)
        self.retry_bad_response = bool(retry_bad_response)
        kw: dict[str, Any] = {}
        if max_connections is not None:
            n = max(1, int(max_connections))
            kw["limits"] = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        self._client = httpx.Client(base_url=self.base_url, timeout=self.timeout_s, headers=headers or {}, **kw)

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

    def _bad(self, detail: str) -> Exception:
        err = BackendError("bad_response", detail)
        return _Retryable(err) if self.retry_bad_response else err

    def _once(self, method: str, path: str, payload: Any, required: Sequence[str], check: Check | None) -> Any:
        try:
            resp = self._client.request(method, path, json=payload)
        except httpx.TimeoutException as e:
            raise _Retryable(BackendError("timeout", f"{method} {path}: no answer within {self.timeout_s}s ({e})")) from e
        except httpx.TransportError as e:
            raise _Retryable(BackendError("connection", f"{method} {self.base_url}{path}: {e}")) from e
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retryable(BackendError(f"http_{resp.status_code}", resp.text[:200]))
        if resp.status_code >= 400:
            raise BackendError(f"http_{resp.status_code}", resp.text[:200])
        try:
            data = resp.json()
        except ValueError as e:
            raise self._bad(f"not JSON: {resp.text[:200]!r}") from e
        missing = [k for k in required if not isinstance(data, dict) or k not in data]
        if missing:
            raise self._bad(f"response lacks {missing}: {str(data)[:200]}")
        problem = check(data) if check is not None else None
        if problem:
            raise self._bad(problem)
        return data

    def _request(self, method: str, path: str, payload: Any, required: Sequence[str], check: Check | None) -> Any:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff_base_s, max=8.0),
            retry=tenacity.retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(method, path, payload, required, check)
        except _Retryable as e:
            log.warning("backend %s%s failed after %d attempts: %s", self.base_url, path, self.max_retries + 1, e.err)
            raise e.err from None
        raise AssertionError("unreachable")  # pragma: no cover
