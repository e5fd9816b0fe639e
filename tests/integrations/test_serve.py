"""creditgym.integrations.serve: the OpenAI-compatible server around a tiny HFPolicy (127.0.0.1 only)."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from creditgym.agents import Context, OpenAIPolicy, Sampling, tiny
from creditgym.agents.hf import HFPolicy
from creditgym.cli import app
from creditgym.integrations.serve import start_server
from creditgym.integrations.serve_api import cut_at_stop

TINY_KW = dict(
    vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1
)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    cache = tmp_path_factory.mktemp("tiny_serve")
    policy = tiny.build(seed=0, cache_dir=cache, env_ids=[], config=tiny.TinyConfig(**TINY_KW))
    return policy.save(cache / "model")


def load(tiny_dir: Path) -> HFPolicy:
    return HFPolicy.from_pretrained(tiny_dir, seed=0)


@pytest.fixture(scope="module")
def served(tiny_dir: Path) -> Any:
    with start_server(load(tiny_dir), model_name="tiny") as server:
        yield server


def prompt_ids(policy: Any, text: str = "Where is the Oslo tower?") -> list[int]:
    ids = policy.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                               add_generation_prompt=True, return_dict=False)  # fmt: skip
    return [int(i) for i in ids]


def forced(policy: Any, prompt: list[int], completion: list[int]) -> torch.Tensor:
    full = torch.tensor([prompt + completion])
    return policy.logprobs(full, torch.ones_like(full))[0, len(prompt) :]


def test_completions_return_the_policys_tokens_and_logprobs(served: Any, tiny_dir: Path) -> None:
    ref = load(tiny_dir)
    prompt = prompt_ids(ref)
    body = {"model": "tiny", "prompt": prompt, "max_tokens": 12, "temperature": 1.0, "seed": 7, "logprobs": 1,
            "return_token_ids": True, "return_tokens_as_token_ids": True}  # fmt: skip
    reply = httpx.post(f"{served.url}/completions", json=body).json()
    choice = reply["choices"][0]
    want = ref.generate([Context(ids=prompt)], Sampling(temperature=1.0, max_new_tokens=12, seed=7))[0]
    assert choice["token_ids"] == list(want.token_ids) and choice["prompt_token_ids"] == prompt
    assert choice["logprobs"]["tokens"] == [f"token_id:{t}" for t in want.token_ids]
    lps = torch.tensor(choice["logprobs"]["token_logprobs"])
    torch.testing.assert_close(lps, forced(ref, prompt, list(want.token_ids)), atol=1e-5, rtol=0)
    assert choice["text"] == want.text and choice["finish_reason"] == want.finish_reason
    assert reply["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": len(want.token_ids),
                              "total_tokens": len(prompt) + len(want.token_ids)}  # fmt: skip


def test_chat_n_samples_match_a_batched_generate(served: Any, tiny_dir: Path) -> None:
    ref = load(tiny_dir)
    msgs = [{"role": "user", "content": "Name the capital of France."}]
    body = {"model": "tiny", "messages": msgs, "max_tokens": 6, "n": 3, "seed": 11, "logprobs": True,
            "return_token_ids": True}  # fmt: skip
    reply = httpx.post(f"{served.url}/chat/completions", json=body).json()
    prompt = prompt_ids(ref, msgs[0]["content"])
    assert reply["prompt_token_ids"] == prompt
    want = ref.generate([Context(ids=prompt)] * 3, Sampling(max_new_tokens=6, seed=11))
    for choice, g in zip(reply["choices"], want, strict=True):
        assert choice["token_ids"] == list(g.token_ids)
        lps = torch.tensor([e["logprob"] for e in choice["logprobs"]["content"]])
        torch.testing.assert_close(lps, forced(ref, prompt, list(g.token_ids)), atol=1e-5, rtol=0)
        assert choice["message"] == {"role": "assistant", "content": g.text}


def test_openai_policy_reads_the_server_like_vllm(served: Any, tiny_dir: Path) -> None:
    ref = load(tiny_dir)
    prompt = prompt_ids(ref)
    with OpenAIPolicy(
        served.url, "tiny", api="completions", tokenizer=ref.tokenizer, server="vllm"
    ) as client:
        got = client.generate([Context(ids=prompt)], Sampling(max_new_tokens=8, seed=3))[0]
    want = ref.generate([Context(ids=prompt)], Sampling(max_new_tokens=8, seed=3))[
        0
    ]  # OpenAIPolicy sends seed + row
    assert got.token_ids == want.token_ids
    torch.testing.assert_close(torch.tensor(got.logprobs), torch.tensor(want.logprobs), atol=1e-5, rtol=0)


def test_streaming_sends_each_choice_then_done(served: Any) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "seed": 1, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    plain = httpx.post(f"{served.url}/chat/completions", json={**body, "stream": False}).json()
    with httpx.stream("POST", f"{served.url}/chat/completions", json=body) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in resp.read().decode().split("\n\n") if ln]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(ln.removeprefix("data: ")) for ln in lines[:-1]]
    assert events[0]["object"] == "chat.completion.chunk"
    assert events[0]["choices"][0]["delta"]["content"] == plain["choices"][0]["message"]["content"]
    assert events[-1]["choices"] == [] and events[-1]["usage"] == plain["usage"]


BAD = [
    ("/completions", {"prompt": "x", "max_tokens": 0}, 400),
    ("/completions", {"prompt": "x", "max_tokens": "8"}, 400),
    ("/completions", {"prompt": "x", "temperature": -1}, 400),
    ("/completions", {"prompt": "x", "top_p": 0}, 400),
    ("/completions", {"prompt": "x", "n": 1000}, 400),
    ("/completions", {"prompt": "x", "stop": [""]}, 400),
    ("/completions", {"prompt": "x", "logprobs": 5}, 400),
    ("/completions", {"prompt": "x", "echo": True}, 400),
    ("/completions", {"prompt": [1, 2, 10**9]}, 400),
    ("/completions", {"prompt": []}, 400),
    ("/completions", {"max_tokens": 4}, 400),
    ("/completions", {"prompt": "x", "model": "no-such-model"}, 404),
    ("/chat/completions", {"messages": "hello"}, 400),
    ("/chat/completions", {"messages": [{"content": "no role"}]}, 400),
    ("/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, 400),
    ("/load_lora_adapter", {"lora_name": "a"}, 400),
    ("/load_lora_adapter", {"lora_name": "a", "lora_path": "/nonexistent/adapter"}, 400),
    ("/unload_lora_adapter", {"lora_name": "never-loaded"}, 404),
    ("/no_such_route", {}, 404),
]


@pytest.mark.parametrize("path,body,status", BAD, ids=[f"{p}:{sorted(b)}" for p, b, _ in BAD])
def test_bad_requests_get_openai_shaped_4xx(
    served: Any, path: str, body: dict[str, Any], status: int
) -> None:
    resp = httpx.post(f"{served.url}{path}", json=body)
    assert resp.status_code == status
    err = resp.json()["error"]
    assert err["code"] == status and isinstance(err["message"], str) and err["message"]
    ok = httpx.post(f"{served.url}/completions", json={"prompt": "hi", "max_tokens": 2})
    assert ok.status_code == 200  # the server keeps serving


def test_malformed_bodies_and_reload_errors(served: Any) -> None:
    root = served.url.removesuffix("/v1")
    assert httpx.post(f"{served.url}/completions", content=b"{not json").status_code == 400
    assert httpx.post(f"{served.url}/completions", content=b"[1, 2]").json()["error"]["code"] == 400
    assert httpx.post(f"{root}/reload_weights", json={"model_path": "/nonexistent"}).status_code == 400
    assert httpx.get(f"{served.url}/nothing").status_code == 404
    assert httpx.get(f"{root}/health").json() == {"status": "ok"}


def perturbed(policy: HFPolicy, seed: int, scale: float = 0.05) -> HFPolicy:
    """A copy of `policy` whose trainable weights moved by seeded noise."""
    out = HFPolicy(copy.deepcopy(policy.model), policy.tokenizer, seed=0)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=gen))
    return out


def test_reload_weights_serves_the_saved_checkpoint(tiny_dir: Path, tmp_path: Path) -> None:
    base = load(tiny_dir)
    moved = perturbed(base, seed=1)
    prompt = prompt_ids(base)
    with start_server(load(tiny_dir), model_name="tiny") as server:
        body = {
            "prompt": prompt,
            "max_tokens": 6,
            "temperature": 0.0,
            "return_token_ids": True,
            "logprobs": 1,
        }
        before = httpx.post(f"{server.url}/completions", json=body).json()["choices"][0]
        reply = httpx.post(
            f"{server.url.removesuffix('/v1')}/reload_weights",
            json={"model_path": str(moved.save(tmp_path / "v1"))},
        )
        assert reply.status_code == 200 and reply.json()["status"] == "ok"
        after = httpx.post(f"{server.url}/completions", json=body).json()["choices"][0]
    want = moved.generate([Context(ids=prompt)], Sampling(temperature=0.0, max_new_tokens=6))[0]
    assert after["token_ids"] == list(want.token_ids)
    torch.testing.assert_close(torch.tensor(after["logprobs"]["token_logprobs"]),
                               forced(moved, prompt, after["token_ids"]), atol=1e-5, rtol=0)  # fmt: skip
    assert torch.tensor(before["logprobs"]["token_logprobs"]).tolist() != after["logprobs"]["token_logprobs"]


def test_lora_adapters_load_serve_by_name_and_unload(tiny_dir: Path, tmp_path: Path) -> None:
    base = load(tiny_dir)
    lora = load(tiny_dir).add_lora(r=4, alpha=8)
    with torch.no_grad():  # B starts at 0 (the adapter is a no-op); move it so the adapter matters
        gen = torch.Generator().manual_seed(0)
        for n, p in lora.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    path = lora.save(tmp_path / "adapter")
    prompt = prompt_ids(base)
    with start_server(load(tiny_dir), model_name="tiny") as server:
        ok = httpx.post(
            f"{server.url}/load_lora_adapter", json={"lora_name": "run-v1", "lora_path": str(path)}
        )
        assert ok.status_code == 200 and ok.text.startswith("Success")
        again = httpx.post(
            f"{server.url}/load_lora_adapter", json={"lora_name": "run-v1", "lora_path": str(path)}
        )
        assert again.status_code == 400
        models = [m["id"] for m in httpx.get(f"{server.url}/models").json()["data"]]
        assert models == ["tiny", "run-v1"]
        for name, ref in (("run-v1", lora), ("tiny", base)):
            body = {
                "model": name,
                "prompt": prompt,
                "max_tokens": 6,
                "seed": 5,
                "logprobs": 1,
                "return_token_ids": True,
            }
            choice = httpx.post(f"{server.url}/completions", json=body).json()["choices"][0]
            want = ref.generate([Context(ids=prompt)], Sampling(max_new_tokens=6, seed=5))[0]
            assert choice["token_ids"] == list(want.token_ids), name
            torch.testing.assert_close(torch.tensor(choice["logprobs"]["token_logprobs"]),
                                       forced(ref, prompt, choice["token_ids"]), atol=1e-5, rtol=0)  # fmt: skip
        gone = httpx.post(f"{server.url}/unload_lora_adapter", json={"lora_name": "run-v1"})
        assert gone.status_code == 200 and gone.text.startswith("Success")
        assert (
            httpx.post(f"{server.url}/completions", json={"model": "run-v1", "prompt": "x"}).status_code
            == 404
        )
        body = {"model": "tiny", "prompt": prompt, "max_tokens": 6, "seed": 5, "return_token_ids": True}
        after = httpx.post(f"{server.url}/completions", json=body).json()["choices"][0]
    assert after["token_ids"] == list(
        base.generate([Context(ids=prompt)], Sampling(max_new_tokens=6, seed=5))[0].token_ids
    )


def test_cut_at_stop_hand_cases() -> None:
    assert cut_at_stop("abc</a>tail", ("</a>",), keep=True) == ("abc</a>", "</a>")
    assert cut_at_stop("abc</a>tail", ("</a>",), keep=False) == ("abc", "</a>")
    assert cut_at_stop("x STOP y END", ("END", "STOP"), keep=False) == (
        "x ",
        "STOP",
    )  # the earliest one fires
    assert cut_at_stop("no stop here", ("</a>",), keep=True) == ("no stop here", None)


@given(st.text(alphabet="ab<>/", max_size=30), st.lists(st.text(alphabet="ab<>/", min_size=1, max_size=3), max_size=3),
       st.booleans())  # fmt: skip
def test_cut_at_stop_properties(text: str, stops: list[str], keep: bool) -> None:
    out, fired = cut_at_stop(text, tuple(stops), keep)
    assert text.startswith(out)
    if fired is None:
        assert out == text and not any(s in text for s in stops)
    else:
        assert fired in stops and (out.endswith(fired) if keep else True)
        body = out[: len(out) - len(fired)] if keep else out
        assert not any(s in body for s in stops)  # nothing fired earlier


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serve_help_and_a_request(tiny_dir: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    helped = CliRunner().invoke(app, ["serve", "--help"])
    assert helped.exit_code == 0 and "--model-name" in helped.output
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "creditgym", "serve", str(tiny_dir), "--port", str(port),
                             "--model-name", "cli-tiny"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        url, reply = f"http://127.0.0.1:{port}/v1", None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                reply = httpx.post(
                    f"{url}/completions", json={"model": "cli-tiny", "prompt": "hi", "max_tokens": 3}
                )
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert reply is not None, f"the server did not answer: {proc.poll()}"
        assert reply.status_code == 200 and len(reply.json()["choices"]) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
