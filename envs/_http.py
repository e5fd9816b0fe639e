"""JsonClient: the one HTTP client real backends use (httpx + tenacity).

Retries timeouts, transport errors, 429 and 5xx with exponential backoff (`backoff_base_s * 2**i`,
capped at 8 s); other 4xx fail at once. After the retries every failure is a `BackendError` whose
`kind` is stable (`timeout`, `connection`, `http_<status>`, `bad_response`), which TextEnv turns into
an error observation. Configuration errors (a malformed URL) raise ValueError at construction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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


class JsonClient:
    """POST/GET JSON to `base_url` with bounded retries; returns the decoded JSON object."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        headers: dict[str, str] | None = None,
    ):
        self.base_url = normalize_base_url(base_url)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_base_s = float(backoff_base_s)
        self._client = httpx.Client(base_url=self.base_url, timeout=self.timeout_s, headers=headers or {})

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> JsonClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def post(self, path: str, payload: Any, required: Sequence[str] = ()) -> Any:
        """POST `payload` as JSON; `required` lists top-level keys the response must have."""
        return self._request("POST", path, payload, required)

    def get(self, path: str, required: Sequence[str] = ()) -> Any:
        return self._request("GET", path, None, required)

    def _once(self, method: str, path: str, payload: Any, required: Sequence[str]) -> Any:
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
            raise BackendError("bad_response", f"not JSON: {resp.text[:200]!r}") from e
        missing = [k for k in required if not isinstance(data, dict) or k not in data]
        if missing:
            raise BackendError("bad_response", f"response lacks {missing}: {str(data)[:200]}")
        return data

    def _request(self, method: str, path: str, payload: Any, required: Sequence[str]) -> Any:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff_base_s, max=8.0),
            retry=tenacity.retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(method, path, payload, required)
        except _Retryable as e:
            log.warning("backend %s%s failed after %d attempts: %s", self.base_url, path, self.max_retries + 1, e.err)
            raise e.err from None
        raise AssertionError("unreachable")  # pragma: no cover
