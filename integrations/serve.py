"""A small OpenAI-compatible HTTP server around a creditgym Policy (`creditgym serve MODEL_DIR`).

Why: every test of the serving issue needs a server that returns what vLLM returns (exact token
ids and the sampled tokens' logprobs) on a CPU, and a checkpoint should be servable without vLLM.
Standard library only (`http.server.ThreadingHTTPServer`), one policy, one lock: requests are
served one at a time, so a seeded request is reproducible whatever else is in flight.

Routes (vLLM's names and fields, so that `OpenAIPolicy(server="vllm")` and the gateway read both):

* `GET /v1/models`, `GET /health`.
* `POST /v1/completions`: `prompt` (text, token ids, or a list of either), `max_tokens` (16),
  `temperature` (1), `top_p`, `top_k`, `n`, `seed`, `stop`, `logprobs` (0 or 1: the sampled
  token's logprob; `top_logprobs` is null, alternatives are not computed), and vLLM's extras
  `return_token_ids` (`prompt_token_ids` and `token_ids` in each choice),
  `return_tokens_as_token_ids` (logprob tokens spelled `token_id:N`), `include_stop_str_in_output`,
  `add_special_tokens`; `stream` sends each choice whole as one server-sent event.
* `POST /v1/chat/completions`: `messages` through the tokenizer's chat template (with `tools` when
  given; tool calls are not parsed out of the reply), `logprobs: true` (`top_logprobs` must be 0),
  the same sampling fields (`max_tokens` or `max_completion_tokens`, default 256); vLLM puts
  `prompt_token_ids` at the top level and `token_ids` in each choice.
* `POST /v1/load_lora_adapter` `{"lora_name", "lora_path"}` and `POST /v1/unload_lora_adapter`
  `{"lora_name"}`: vLLM's runtime LoRA endpoints (vLLM serves them when
  `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`; docs.vllm.ai "LoRA Adapters", "Dynamically serving LoRA
  Adapters"; request models in vLLM's `entrypoints/serve/lora/protocol.py`). They answer 200 with
  a plain-text "Success: ..." line, 400 for a name already loaded or an unreadable path, 404 for
  an unknown name. A loaded adapter is then a `model` of its own; the base name serves the base.
* `POST /reload_weights` `{"model_path": DIR}`: replace the full weights from a saved Hugging Face
  folder (non-LoRA training). A creditgym endpoint: stock vLLM has no HTTP route that reloads
  weights from a directory (its dev-mode `/collective_rpc` runs a worker method, and its
  `/update_weights` family receives tensors from the trainer through a weight-transfer backend),
  so RL stacks around vLLM add one of this
  shape; at the server root, as vLLM's weight routes are.

Errors are OpenAI-shaped JSON, `{"error": {"message", "type", "param", "code"}}`: 4xx for a bad
request (never a crash), 500 (logged) for a failure inside the model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from creditgym.agents.base import Context, Generation, Policy, Sampling
from creditgym.integrations.serve_api import (
    MAX_N,
    RequestError,
    cut_at_stop,
    flag_field,
    int_field,
    parse_sampling,
    request_prompts,
    stream_events,
    token_piece,
)

__all__ = ["RELOAD_WEIGHTS_PATH", "ModelServer", "ServerHandle", "start_server"]

log = logging.getLogger(__name__)

RELOAD_WEIGHTS_PATH = "/reload_weights"
"""The full-weights reload route (server root, not under /v1)."""
MAX_BODY_BYTES = 32 * 2**20
"""Largest request body read; a longer one is answered 413."""


# ---------------------------------------------------------------------- the model
@dataclass
class ModelServer:
    """The served policy, its name, its loaded LoRA adapters (name -> path) and the one lock."""

    policy: Policy
    model_name: str
    adapters: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    created: int = field(default_factory=lambda: int(time.time()))

    # ------------------------------------------------------------------ models and weights
    def models(self) -> dict[str, Any]:
        def card(name: str, parent: str | None) -> dict[str, Any]:
            return {"id": name, "object": "model", "created": self.created, "owned_by": "creditgym",
                    "root": name if parent is None else self.adapters[name], "parent": parent}  # fmt: skip

        return {
            "object": "list",
            "data": [card(self.model_name, None)] + [card(a, self.model_name) for a in self.adapters],
        }

    def _model(self, body: dict[str, Any]) -> str:
        name = body.get("model") or self.model_name
        if name != self.model_name and name not in self.adapters:
            raise RequestError(404, f"The model `{name}` does not exist; served: {[self.model_name, *self.adapters]}",
                               "model", "NotFoundError")  # fmt: skip
        return str(name)

    def _torch_model(self, what: str) -> Any:
        model = getattr(self.policy, "model", None)
        if model is None:
            raise RequestError(400, f"{what} needs a policy with a torch model (HFPolicy); this server holds a "
                               f"{type(self.policy).__name__}")  # fmt: skip
        return model

    @contextlib.contextmanager
    def _active(self, name: str) -> Iterator[None]:
        """Generate with adapter `name`, or with the base weights (adapters off) for the base name."""
        model = getattr(self.policy, "model", None)
        if not self.adapters or model is None:
            yield
        elif name == self.model_name:
            with model.disable_adapter():
                yield
        else:
            model.set_adapter(name)
            yield

    def load_lora(self, body: dict[str, Any]) -> str:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
            raise RequestError(400, "load_lora_adapter needs string fields 'lora_name' and 'lora_path'")
        if not (Path(path) / "adapter_config.json").is_file():
            raise RequestError(400, f"no LoRA adapter at {path!r} (no adapter_config.json): save it with "
                               "policy.save(dir) from a policy with add_lora", "lora_path")  # fmt: skip
        with self.lock:
            if name == self.model_name or name in self.adapters:
                raise RequestError(400, f"The lora adapter '{name}' has already been loaded.", "lora_name")
            model = self._torch_model("load_lora_adapter")
            try:
                if hasattr(model, "load_adapter") and hasattr(model, "peft_config"):
                    model.load_adapter(path, adapter_name=name)
                else:
                    from peft import PeftModel

                    self.policy.model = PeftModel.from_pretrained(model, path, adapter_name=name)  # type: ignore[attr-defined]
                    self.policy.model.eval()  # type: ignore[attr-defined]
            except (ValueError, KeyError, RuntimeError, OSError) as e:
                raise RequestError(
                    400, f"could not load the LoRA adapter at {path!r}: {e}", "lora_path"
                ) from e
            self.adapters[name] = path
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload_lora(self, body: dict[str, Any]) -> str:
        name = body.get("lora_name")
        if not isinstance(name, str) or not name:
            raise RequestError(400, "unload_lora_adapter needs a string field 'lora_name'")
        with self.lock:
            if name not in self.adapters:
                raise RequestError(
                    404, f"The lora adapter '{name}' cannot be found.", "lora_name", "NotFoundError"
                )
            model = self._torch_model("unload_lora_adapter")
            del self.adapters[name]
            if self.adapters:
                model.set_adapter(next(iter(self.adapters)))  # peft keeps one adapter active
                model.delete_adapter(name)
            else:  # the last one: back to the plain model
                self.policy.model = model.unload()  # type: ignore[attr-defined]
        return f"Success: LoRA adapter '{name}' removed successfully."

    def reload_weights(self, body: dict[str, Any]) -> dict[str, Any]:
        path = body.get("model_path")
        if not isinstance(path, str) or not (Path(path) / "config.json").is_file():
            raise RequestError(400, f"'model_path' must name a saved Hugging Face folder (with config.json), got "
                               f"{path!r}", "model_path")  # fmt: skip
        from transformers import AutoModelForCausalLM

        with self.lock:
            if self.adapters:
                raise RequestError(409, f"unload the LoRA adapters {sorted(self.adapters)} before reloading full "
                                   "weights", kind="conflict")  # fmt: skip
            model = self._torch_model("reload_weights")
            dtype = next(model.parameters()).dtype
            try:
                src = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
                model.load_state_dict(src.state_dict(), strict=True)
            except (ValueError, KeyError, RuntimeError, OSError) as e:
                raise RequestError(400, f"could not load weights from {path!r} into the served model: {e}",
                                   "model_path") from e  # fmt: skip
            model.eval()
        return {"status": "ok", "model_path": path, "tensors": len(src.state_dict())}

    # ------------------------------------------------------------------ generation
    def _generate(self, name: str, prompts: list[list[int]], sampling: Sampling, n: int) -> list[Generation]:
        contexts = [Context(ids=list(p)) for p in prompts for _ in range(n)]
        with self.lock:
            self._model({"model": name})  # again under the lock: an unload may have raced this request
            with self._active(name):
                gens = self.policy.generate(contexts, sampling)
        if len(gens) != len(contexts):
            raise RuntimeError(f"the policy returned {len(gens)} generations for {len(contexts)} contexts")
        return gens

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        name = self._model(body)
        sampling, n = parse_sampling(body, 16)
        k = int_field(body, "logprobs", None, 0)
        if k is not None and k > 1:
            raise RequestError(
                400, "this server returns the sampled tokens' logprobs only: use logprobs=0 or 1", "logprobs"
            )
        if flag_field(body, "echo", False):
            raise RequestError(400, "echo is not supported by creditgym serve", "echo")
        prompts = request_prompts(self.policy.tokenizer, body)
        if len(prompts) * n > MAX_N:
            raise RequestError(
                400, f"{len(prompts)} prompts x n={n} exceeds {MAX_N} samples per request", "n"
            )
        keep_stop, as_ids = (
            flag_field(body, "include_stop_str_in_output", False),
            flag_field(body, "return_tokens_as_token_ids", False),
        )
        with_ids = flag_field(body, "return_token_ids", False)
        gens = self._generate(name, prompts, sampling, n)
        choices = []
        for i, g in enumerate(gens):
            text, stop = cut_at_stop(g.text, sampling.stop, keep_stop)
            choice: dict[str, Any] = {"index": i, "text": text, "logprobs": None,
                                      "finish_reason": g.finish_reason, "stop_reason": stop}  # fmt: skip
            if k is not None:
                pieces = [token_piece(self.policy.tokenizer, t, as_ids) for t in g.token_ids]
                offsets, at = [], 0
                for t in g.token_ids:  # where each token starts in the decoded text
                    offsets.append(at)
                    at += len(token_piece(self.policy.tokenizer, t, False))
                choice["logprobs"] = {"tokens": pieces, "token_logprobs": list(g.logprobs), "top_logprobs": None,
                                      "text_offset": offsets}  # fmt: skip
            if with_ids:
                choice["prompt_token_ids"], choice["token_ids"] = prompts[i // n], list(g.token_ids)
            choices.append(choice)
        return self._reply(
            "text_completion", "cmpl", name, choices, [prompts[i // n] for i in range(len(gens))], gens
        )

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        name = self._model(body)
        sampling, n = parse_sampling(body, 256)
        msgs = body.get("messages")
        if (
            not isinstance(msgs, list)
            or not msgs
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in msgs)
        ):
            raise RequestError(
                400, "'messages' must be a non-empty list of {role, content} objects", "messages"
            )
        want_lp = flag_field(body, "logprobs", False)
        if int_field(body, "top_logprobs", 0, 0):
            raise RequestError(
                400,
                "this server returns the sampled tokens' logprobs only: top_logprobs must be 0",
                "top_logprobs",
            )
        tools = body.get("tools")
        kw: dict[str, Any] = {"tools": tools} if tools else {}
        try:
            ids = self.policy.tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True,
                                                            return_dict=False, **kw)  # fmt: skip
        except (ValueError, TypeError, KeyError) as e:
            raise RequestError(400, f"the chat template rejected the messages: {e}", "messages") from e
        prompt = [int(i) for i in ids]
        keep_stop, as_ids = (
            flag_field(body, "include_stop_str_in_output", False),
            flag_field(body, "return_tokens_as_token_ids", False),
        )
        with_ids = flag_field(body, "return_token_ids", False)
        gens = self._generate(name, [prompt], sampling, n)
        choices = []
        for i, g in enumerate(gens):
            text, stop = cut_at_stop(g.text, sampling.stop, keep_stop)
            choice: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": text},
                                      "logprobs": None, "finish_reason": g.finish_reason, "stop_reason": stop}  # fmt: skip
            if want_lp:
                entries = []
                for t, lp in zip(g.token_ids, g.logprobs):
                    piece = token_piece(self.policy.tokenizer, t, as_ids)
                    entries.append(
                        {"token": piece, "logprob": lp, "bytes": list(piece.encode()), "top_logprobs": []}
                    )
                choice["logprobs"] = {"content": entries}
            if with_ids:
                choice["token_ids"] = list(g.token_ids)
            choices.append(choice)
        reply = self._reply("chat.completion", "chatcmpl", name, choices, [prompt] * len(gens), gens)
        if with_ids:
            reply["prompt_token_ids"] = prompt
        return reply

    def _reply(self, obj: str, prefix: str, name: str, choices: list[dict[str, Any]], prompts: list[list[int]],
               gens: list[Generation]) -> dict[str, Any]:  # fmt: skip
        p = sum(len(x) for x in {tuple(x) for x in prompts})
        c = sum(len(g.token_ids) for g in gens)
        return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": obj, "created": int(time.time()), "model": name,
                "choices": choices, "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}  # fmt: skip


# ---------------------------------------------------------------------- HTTP
def _handler(state: ModelServer) -> type[BaseHTTPRequestHandler]:
    posts: dict[str, Callable[[dict[str, Any]], Any]] = {
        "/v1/completions": state.completions,
        "/v1/chat/completions": state.chat,
        "/v1/load_lora_adapter": state.load_lora,
        "/v1/unload_lora_adapter": state.unload_lora,
        RELOAD_WEIGHTS_PATH: state.reload_weights,
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, payload: Any) -> None:
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header(
                "Content-Type",
                "text/plain; charset=utf-8" if isinstance(payload, str) else "application/json",
            )
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, reply: dict[str, Any], include_usage: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for event in stream_events(reply, include_usage):
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True

        def _path(self) -> str:
            return self.path.split("?", 1)[0].rstrip("/") or "/"

        def do_GET(self) -> None:
            path = self._path()
            if path == "/v1/models":
                return self._send(200, state.models())
            if path == "/health":
                return self._send(200, {"status": "ok"})
            self._send(404, RequestError(404, f"no route GET {path}", kind="NotFoundError").payload())

        def do_POST(self) -> None:
            try:
                route = posts.get(self._path())
                if route is None:
                    raise RequestError(
                        404, f"no route POST {self._path()}; routes: {sorted(posts)}", kind="NotFoundError"
                    )
                size = self.headers.get("Content-Length", "")
                if not size.isdigit():
                    raise RequestError(411, "send the body with a Content-Length header")
                if int(size) > MAX_BODY_BYTES:
                    self.close_connection = True
                    raise RequestError(413, f"request body of {size} bytes exceeds {MAX_BODY_BYTES}")
                try:
                    body = json.loads(self.rfile.read(int(size)) or b"null")
                except ValueError as e:
                    raise RequestError(400, f"the body is not valid JSON: {e}") from e
                if not isinstance(body, dict):
                    raise RequestError(400, "the body must be a JSON object")
                out = route(body)
                if isinstance(out, dict) and flag_field(body, "stream", False) and "choices" in out:
                    opts = body.get("stream_options") or {}
                    return self._stream(out, bool(isinstance(opts, dict) and opts.get("include_usage")))
                self._send(200, out)
            except RequestError as e:
                self._send(e.status, e.payload())
            except Exception as e:  # the model failed: report it, keep serving
                log.exception("creditgym serve: %s failed", self.path)
                self._send(
                    500, RequestError(500, f"{type(e).__name__}: {e}", kind="internal_server_error").payload()
                )

    return Handler


@dataclass
class ServerHandle:
    """A running server: `url` is the OpenAI base URL (ends in `/v1`); `close()` stops it."""

    host: str
    port: int
    httpd: ThreadingHTTPServer
    thread: threading.Thread
    state: ModelServer

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def model_name(self) -> str:
        return self.state.model_name

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5.0)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def start_server(
    policy: Policy, host: str = "127.0.0.1", port: int = 0, model_name: str | None = None
) -> ServerHandle:
    """Serve `policy` on `host:port` (0: a free port) from a background thread; the server owns the
    policy from here on (loading a LoRA adapter wraps `policy.model`). `model_name` is the name
    requests use (default the policy's `name`)."""
    name = model_name or str(getattr(policy, "name", "") or "creditgym")
    state = ModelServer(policy, name)
    httpd = ThreadingHTTPServer((host, int(port)), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="creditgym-serve", daemon=True
    )
    thread.start()
    bound_host = str(httpd.server_address[0])
    log.info("creditgym serve: %s at http://%s:%d/v1", name, bound_host, httpd.server_address[1])
    return ServerHandle(bound_host, int(httpd.server_address[1]), httpd, thread, state)
