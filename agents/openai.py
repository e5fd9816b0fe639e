"""OpenAIPolicy: any OpenAI-compatible HTTP endpoint (chat or completions) as a Policy.

For evaluation, opponents, simulators and judges, and as a trainer's `generator=` (not trainable
itself): `sync_from(policy)` saves the trained weights and has the server load them the vLLM way
(a LoRA adapter through `/v1/load_lora_adapter`, full weights through `/reload_weights`, see
`creditgym.integrations.serve`). Requests run in a thread pool
bounded by `max_concurrency`, each with a timeout and the retries of `envs.http_client.JsonClient`: exponential backoff
(`backoff_base_s * 2**i`, capped at 8 s) on timeouts, dropped connections, 429, 5xx and malformed
responses; other 4xx fail at once. Token ids and logprobs come from the server when it returns
them (vLLM's `token_ids` / `return_tokens_as_token_ids`, the OpenAI `logprobs` fields); otherwise
the text is tokenized with the local tokenizer (the ByteTokenizer by default) and logprobs are 0.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from creditgym.agents.base import Context, Generation, Sampling
from creditgym.agents.byte_tokenizer import ByteTokenizer
from creditgym.envs.base import BackendError
from creditgym.envs.http_client import DEFAULT_MAX_BODY_BYTES, JsonClient, preview

__all__ = ["OpenAIError", "OpenAIPolicy"]

log = logging.getLogger(__name__)
_TOKEN_ID = re.compile(r"^token_id:(\d+)$")


class OpenAIError(BackendError, RuntimeError):
    """A request failed after its retries (or at once, for a 4xx). `kind`: timeout, connection,
    http_<status>, bad_response (not JSON, or a reply `_problem` rejects), body_too_large."""


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _problem(choice: Any, chat: bool) -> str | None:
    """What is wrong with one `choices[i]` of a chat or completions reply, or None when it has the
    shape `_parse` reads: strings where text goes, finite numbers where logprobs go, int token ids."""
    if not isinstance(choice, dict):
        return f"choice is not an object: {preview(choice)}"
    lp = choice.get("logprobs")
    if lp is not None and not isinstance(lp, dict):
        return f"'logprobs' is not an object: {preview(lp)}"
    lp = lp or {}
    if chat:
        msg = choice.get("message")
        if msg is not None and not isinstance(msg, dict):
            return f"'message' is not an object: {preview(msg)}"
        content = (msg or {}).get("content")
        if content is not None and not isinstance(content, str):
            return f"message content is not a string: {preview(content)}"
        entries = lp.get("content")
        if entries is not None and not isinstance(entries, list):
            return f"logprobs.content is not a list: {preview(entries)}"
        for e in entries or []:
            if not isinstance(e, dict) or not isinstance(e.get("token", ""), str) or not _number(e.get("logprob")):
                return f"logprobs.content entry needs a string 'token' and a finite 'logprob': {preview(e)}"
    else:
        if choice.get("text") is not None and not isinstance(choice["text"], str):
            return f"'text' is not a string: {preview(choice['text'])}"
        tokens, values = lp.get("tokens"), lp.get("token_logprobs")
        if tokens is not None and not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
            return f"logprobs.tokens is not a list of strings: {preview(tokens)}"
        # null stands for "no logprob" (the first prompt token under echo) and reads as 0
        if values is not None and not (isinstance(values, list) and all(v is None or _number(v) for v in values)):
            return f"logprobs.token_logprobs is not a list of finite numbers: {preview(values)}"
    ids = choice.get("token_ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)):
        return f"'token_ids' is not a list of non-negative ints: {preview(ids)}"
    return None


def _reply_check(chat: bool) -> Callable[[Any], str | None]:
    """JsonClient check of a reply: a non-empty `choices` list whose first choice `_problem` accepts."""

    def check(data: Any) -> str | None:
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            return f"no 'choices' in {preview(data)}"
        return _problem(data["choices"][0], chat)

    return check


class OpenAIPolicy:
    """Generate through `{base_url}/chat/completions` (`api="chat"`, sends `Context.messages`) or
    `{base_url}/completions` (`api="completions"`, sends `Context.ids` when a local tokenizer
    matching the server's is given, else the decoded prompt text).

    `server="vllm"` adds vLLM's extra fields (top_k, stop strings kept in the output, token ids
    returned); `extra_body` is merged into every request; `on_error="empty"` turns a failed
    request into an empty Generation with `finish_reason="error"` instead of raising.
    `deadline_s` (default `2 * timeout_s`) bounds one request across its retries and
    `max_body_bytes` (default 16 MiB) the reply body; see JsonClient and docs/backends.md.

    As a trainer's `generator=`: `api="completions"`, `server="vllm"` and `tokenizer=` the trained
    policy's tokenizer, so that prompts go in and samples come back as that vocabulary's token ids
    with their logprobs; `sync_dir` is where `sync_from` writes each version (default a temporary
    folder, removed by `close()`), a path the server must be able to read.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api: str = "chat",
        tokenizer: Any = None,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        request_logprobs: bool = True,
        server: str = "generic",
        extra_body: Mapping[str, Any] | None = None,
        on_error: str = "raise",
        *,
        deadline_s: float | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        sync_dir: str | Path | None = None,
    ):
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be 'chat' or 'completions', got {api!r}")
        if server not in ("generic", "vllm"):
            raise ValueError(f"server must be 'generic' or 'vllm', got {server!r}")
        if on_error not in ("raise", "empty"):
            raise ValueError(f"on_error must be 'raise' or 'empty', got {on_error!r}")
        self.model_name, self.api, self.server, self.on_error = model, api, server, on_error
        self.local_tokenizer = tokenizer is not None
        self.tokenizer = tokenizer if tokenizer is not None else ByteTokenizer()
        self.max_concurrency = max(1, int(max_concurrency))
        self.timeout_s, self.max_retries, self.backoff_base_s = (
            float(timeout_s),
            int(max_retries),
            float(backoff_base_s),
        )
        self.request_logprobs = bool(request_logprobs)
        self.extra_body = dict(extra_body or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = JsonClient(
            base_url, timeout_s=self.timeout_s, max_retries=self.max_retries, backoff_base_s=self.backoff_base_s,
            headers=headers, max_connections=self.max_concurrency, retry_bad_response=True,
            url_example="http://host:port/v1", deadline_s=deadline_s, max_body_bytes=max_body_bytes,
        )  # fmt: skip
        self.base_url = self._client.base_url
        self.base_model_name = model
        self._headers = headers
        self.sync_dir, self._own_sync_dir = (Path(sync_dir) if sync_dir is not None else None), sync_dir is None
        self.sync_version = 0

    def close(self) -> None:
        self._client.close()
        if self._own_sync_dir and self.sync_dir is not None:
            shutil.rmtree(self.sync_dir, ignore_errors=True)
            self.sync_dir = None

    def __enter__(self) -> OpenAIPolicy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- requests
    def _body(self, ctx: Context, sampling: Sampling, index: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model_name, "max_tokens": sampling.max_new_tokens, "n": 1}
        body["temperature"] = max(0.0, float(sampling.temperature))
        if sampling.top_p < 1.0:
            body["top_p"] = sampling.top_p
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = int(sampling.seed) + index  # rows of a group must not share one sample
        if self.api == "chat":
            if not ctx.messages:
                raise ValueError(
                    "api='chat' needs Context.messages; use api='completions' for token-id prompts"
                )
            body["messages"] = ctx.messages
            if self.request_logprobs:
                body["logprobs"] = True
        else:
            if self.local_tokenizer and ctx.ids:
                body["prompt"] = [int(i) for i in ctx.ids]
            elif ctx.ids:
                body["prompt"] = self.tokenizer.decode(ctx.ids)
            else:
                body["prompt"] = "".join(m.get("content") or "" for m in ctx.messages)
            if self.request_logprobs:
                body["logprobs"] = 1
        if self.server == "vllm":
            body.update(
                include_stop_str_in_output=True, return_tokens_as_token_ids=True, return_token_ids=True
            )
            if sampling.top_k > 0:
                body["top_k"] = sampling.top_k
        body.update(self.extra_body)
        return body

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            data: dict[str, Any] = self._client.post(path, body, check=_reply_check(self.api == "chat"))
        except BackendError as e:
            hint = f" (request fields: {sorted(body)})" if e.kind.startswith("http_4") else ""
            raise OpenAIError(e.kind, f"{e.detail}{hint}") from e
        return data

    # ----------------------------------------------------------------- responses
    def _parse(self, data: dict[str, Any], sampling: Sampling) -> Generation:
        problem = _reply_check(self.api == "chat")(data)  # _post checked it; a direct caller may not have
        if problem:
            raise OpenAIError("bad_response", problem)
        choice = data["choices"][0]
        if self.api == "chat":
            text = (choice.get("message") or {}).get("content") or ""
            entries = ((choice.get("logprobs") or {}).get("content")) or []
            tokens = [e.get("token", "") for e in entries if isinstance(e, dict)]
            lps = [float(e.get("logprob", 0.0)) for e in entries if isinstance(e, dict)]
        else:
            text = choice.get("text") or ""
            lp = choice.get("logprobs") or {}
            tokens = list(lp.get("tokens") or [])
            lps = [float(x) if x is not None else 0.0 for x in (lp.get("token_logprobs") or [])]
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        stop_reason = choice.get("stop_reason")
        if isinstance(stop_reason, str) and stop_reason in sampling.stop and not text.endswith(stop_reason):
            text += stop_reason  # servers drop the stop string from the text; the env must see it
        ids = self._server_ids(choice, tokens)
        if ids is not None and len(lps) != len(ids):
            lps = [0.0] * len(ids)
        if ids is None:
            ids = list(self.tokenizer.encode(text, add_special_tokens=False))
            lps = lps if (self.local_tokenizer and len(lps) == len(ids)) else [0.0] * len(ids)
            eos = getattr(self.tokenizer, "eos_token_id", None)
            if (
                finish == "stop"
                and eos is not None
                and not any(s and text.endswith(s) for s in sampling.stop)
            ):
                ids.append(int(eos))  # the model ended its turn: same convention as ScriptedPolicy
                lps.append(0.0)
        return Generation(tuple(int(i) for i in ids), tuple(lps), text, finish)

    def _server_ids(self, choice: dict[str, Any], tokens: list[str]) -> list[int] | None:
        """Token ids the server reported: a `token_ids` field, or `token_id:N` logprob tokens."""
        if not self.local_tokenizer:
            return None  # ids of an unknown vocabulary would not match our tokenizer
        raw = choice.get("token_ids")
        if isinstance(raw, list) and all(isinstance(i, int) for i in raw):
            return list(raw)
        matches = [_TOKEN_ID.match(t) for t in tokens]
        if tokens and all(matches):
            return [int(m.group(1)) for m in matches if m]
        return None

    def _one(self, ctx: Context, sampling: Sampling, index: int) -> Generation:
        path = "/chat/completions" if self.api == "chat" else "/completions"
        try:
            return self._parse(self._post(path, self._body(ctx, sampling, index)), sampling)
        except OpenAIError as e:
            if self.on_error == "raise":
                raise
            log.warning("OpenAIPolicy request %d failed: %s", index, e)
            return Generation((), (), "", "error")

    def generate(self, contexts: list[Context], sampling: Sampling) -> list[Generation]:
        """One request per context, at most `max_concurrency` in flight; results keep the order."""
        if not contexts:
            return []
        if len(contexts) == 1 or self.max_concurrency == 1:
            return [self._one(c, sampling, i) for i, c in enumerate(contexts)]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(contexts))) as pool:
            return list(pool.map(self._one, contexts, [sampling] * len(contexts), range(len(contexts))))

    # ----------------------------------------------------------------- weight sync (a trainer's generator)
    def _control(self, url: str, body: dict[str, Any]) -> str:
        """POST a weight-sync call; vLLM answers these with plain text, so no JSON is expected."""
        import httpx

        try:
            resp = httpx.post(url, json=body, headers=self._headers, timeout=max(self.timeout_s, 60.0))
        except httpx.HTTPError as e:
            raise OpenAIError("connection", f"POST {url}: {e}") from e
        if resp.status_code >= 400:
            raise OpenAIError(f"http_{resp.status_code}", f"POST {url} {preview(body)}: {resp.text[:300]}")
        return resp.text

    def sync_from(
        self, policy: Any, verify: bool = True, probe_ids: Sequence[int] | None = None, atol: float = 1e-2
    ) -> float:
        """Have the server generate with `policy`'s current weights. A LoRA policy saves its adapter
        (`policy.save`) as version v, the server loads it (`/v1/load_lora_adapter`, name
        `{model}-v{v}`), requests name it from then on and the previous version is unloaded; a policy
        without adapters saves its full weights and the server reloads them (`/reload_weights`).
        With `verify`, a greedy probe continuation's server logprobs are compared with
        `policy.logprobs` on the same ids; returns the max abs difference (as VLLMPolicy.sync_from),
        raising if it exceeds `atol`."""
        if not self.local_tokenizer:
            raise ValueError("OpenAIPolicy.sync_from needs tokenizer= the trained policy's tokenizer (with api='completions', "
                             "server='vllm'): a generator's token ids must be the trainer's")  # fmt: skip
        if self.sync_dir is None:
            self.sync_dir = Path(tempfile.mkdtemp(prefix="creditgym-sync-"))
        self.sync_version += 1
        root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        if policy.has_adapter:
            name = f"{self.base_model_name}-v{self.sync_version}"
            path = policy.save(self.sync_dir / name)
            load = {"lora_name": name, "lora_path": str(path.resolve())}
            try:
                self._control(f"{self.base_url}/load_lora_adapter", load)
            except OpenAIError as e:  # a restarted trainer meets its own earlier name on a long-lived server
                if e.kind != "http_400" or "already" not in e.detail:
                    raise
                self._control(f"{self.base_url}/unload_lora_adapter", {"lora_name": name})
                self._control(f"{self.base_url}/load_lora_adapter", load)
            old, self.model_name = self.model_name, name
            if old != self.base_model_name:
                self._control(f"{self.base_url}/unload_lora_adapter", {"lora_name": old})
                shutil.rmtree(self.sync_dir / old, ignore_errors=True)
        else:
            path = policy.save(self.sync_dir / f"v{self.sync_version}")
            self._control(f"{root}/reload_weights", {"model_path": str(path.resolve())})
            shutil.rmtree(self.sync_dir / f"v{self.sync_version - 1}", ignore_errors=True)
        if not verify:
            return 0.0
        diff = self.probe_diff(policy, probe_ids)
        if diff > atol:
            raise RuntimeError(f"weight sync check failed: the server and the trained policy disagree by {diff:.3g} "
                               f"(> atol={atol}) on the probe prompt; is the server's base model the trainer's, in float32?")  # fmt: skip
        return diff

    def probe_diff(self, policy: Any, probe_ids: Sequence[int] | None = None, n_tokens: int = 8) -> float:
        """Max |server logprob - policy logprob| over a greedy completion of the probe prompt (token ids
        in, through `/completions` whatever `api` is)."""
        import torch

        ids = [int(i) for i in probe_ids] if probe_ids else self._default_probe()
        body = {"model": self.model_name, "prompt": ids, "max_tokens": n_tokens, "temperature": 0.0, "logprobs": 1,
                "return_token_ids": True, "return_tokens_as_token_ids": True}  # fmt: skip
        try:
            data = self._client.post("/completions", body, check=_reply_check(False))
        except BackendError as e:
            raise OpenAIError(e.kind, e.detail) from e
        choice = data["choices"][0]
        lp = choice.get("logprobs") or {}
        gen = self._server_ids(choice, list(lp.get("tokens") or []))
        lps = [float(x) if x is not None else 0.0 for x in (lp.get("token_logprobs") or [])]
        if gen is None or len(gen) != len(lps):
            raise OpenAIError("bad_response", f"the probe reply has no token ids with logprobs: {preview(choice)}")
        if not gen:
            return 0.0
        full = torch.tensor([ids + gen])
        forced = policy.logprobs(full, torch.ones_like(full))[0, len(ids) :].cpu()
        return float((forced - torch.tensor(lps)).abs().max())

    def _default_probe(self) -> list[int]:
        msgs = [{"role": "user", "content": "Name the capital of France."}]
        ids = self.tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=False)
        return [int(i) for i in ids]
