"""OpenAIPolicy as a trainer's `generator=`: weight sync to a server and TIS on by default."""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from creditgym.agents import Context, OpenAIPolicy, Sampling, tiny
from creditgym.agents.base import WeightSyncedGenerator
from creditgym.agents.hf import HFPolicy
from creditgym.agents.openai import OpenAIError
from creditgym.envs.search import SEARCH_EASY
from creditgym.integrations.serve import start_server
from creditgym.trainers import GRPOConfig, GRPOTrainer

TINY_KW = dict(
    vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    cache = tmp_path_factory.mktemp("tiny_gen")
    return tiny.build(seed=0, cache_dir=cache, env_ids=[], config=tiny.TinyConfig(**TINY_KW)).save(
        cache / "model"
    )


def load(tiny_dir: Path) -> HFPolicy:
    return HFPolicy.from_pretrained(tiny_dir, seed=0)


def config(**kw: Any) -> GRPOConfig:
    base = dict(steps=2, num_groups=2, group_size=2, max_new_tokens=12, lr=3e-3, tensorboard=False, seed=0,
                entropy_coef=0.1,  # a gradient even when every episode of a group scores the same
                env_kwargs={"max_turns": 2})  # fmt: skip
    return GRPOConfig(**{**base, **kw})


@pytest.mark.parametrize("lora", [False, True], ids=["full-weights", "lora"])
def test_trains_two_steps_through_the_server_and_syncs_after_each(
    tiny_dir: Path, tmp_path: Path, lora: bool
) -> None:
    policy = load(tiny_dir)
    with start_server(load(tiny_dir), model_name="tiny") as server:
        gen = OpenAIPolicy(server.url, "tiny", api="completions", tokenizer=policy.tokenizer, server="vllm",
                           max_concurrency=4, sync_dir=tmp_path / "sync")  # fmt: skip
        assert isinstance(gen, WeightSyncedGenerator)
        trainer = GRPOTrainer(policy, SEARCH_EASY, config(lora=lora), generator=gen)
        assert trainer.config.tis_cap == 2.0  # a server samples: TIS on by default
        start = gen.probe_diff(policy)  # the sync check's fixed prompt, continued greedily by the server
        assert start < 1e-5  # the server starts with the trainer's weights
        frozen = copy.deepcopy(policy.model)
        for step in range(2):
            metrics = trainer.step()
            assert "tis/mean" in metrics and metrics["mismatch/max_abs"] < 1e-4  # server and trainer logprobs agree
            assert gen.sync_version == step + 1
            assert gen.model_name == (f"tiny-v{step + 1}" if lora else "tiny")
            # the server's weights are the trainer's: same logprobs on a fixed prompt's greedy continuation
            assert gen.probe_diff(policy) < 1e-5
        moved = max(
            float((a - b).detach().abs().max())
            for a, b in zip(policy.model.parameters(), frozen.parameters())
        )
        assert moved > 0.0  # training changed the weights the server now serves
        assert gen.probe_diff(HFPolicy(frozen, policy.tokenizer)) > 1e-4  # ... so the check above can fail
        served = [m["id"] for m in httpx.get(f"{server.url}/models").json()["data"]]
        assert served == (["tiny", "tiny-v2"] if lora else ["tiny"])  # the old adapter was unloaded
        gen.close()


def test_tis_is_on_by_default_with_a_generator_only(tiny_dir: Path) -> None:
    policy = load(tiny_dir)
    other = HFPolicy(copy.deepcopy(policy.model), policy.tokenizer, seed=0)
    assert GRPOTrainer(policy, SEARCH_EASY, config()).config.tis_cap is None
    assert GRPOTrainer(policy, SEARCH_EASY, config(), generator=other).config.tis_cap == 2.0
    assert (
        GRPOTrainer(policy, SEARCH_EASY, config(tis_cap=0), generator=other).config.tis_cap is None
    )  # opt-out
    assert GRPOTrainer(policy, SEARCH_EASY, config(tis_cap=1.5), generator=other).config.tis_cap == 1.5
    assert GRPOTrainer(policy, SEARCH_EASY, config(tis_cap=0)).config.tis_cap is None
    with pytest.raises(ValueError, match="tis_cap"):
        GRPOTrainer(policy, SEARCH_EASY, config(tis_cap=-1.0), generator=other)
    metrics = GRPOTrainer(policy, SEARCH_EASY, config(steps=1)).step()
    assert "tis/mean" not in metrics


class FakeVLLM:
    """Speaks vLLM's weight-sync endpoints (runtime LoRA load/unload: 200 with a plain-text line) and
    a creditgym-style /reload_weights, recording every call; completions get a canned reply.

    Unverified against a real vLLM until a GPU run confirms it: the payloads follow vLLM's
    LoadLoRAAdapterRequest / UnloadLoRAAdapterRequest (`lora_name`, `lora_path`)."""

    def __init__(self, fail_path: str | None = None):
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_path = fail_path
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.calls.append((self.path, body))
                if self.path == fake.fail_path:
                    return self._send(500, "application/json", b'{"error": {"message": "boom", "code": 500}}')
                if self.path == "/v1/load_lora_adapter":
                    return self._send(
                        200,
                        "text/plain",
                        f"Success: LoRA adapter '{body['lora_name']}' added successfully.".encode(),
                    )
                if self.path == "/v1/unload_lora_adapter":
                    return self._send(
                        200,
                        "text/plain",
                        f"Success: LoRA adapter '{body['lora_name']}' removed successfully.".encode(),
                    )
                if self.path == "/reload_weights":
                    return self._send(200, "application/json", b'{"status": "ok"}')
                reply = {"choices": [{"index": 0, "text": "x", "token_ids": [5], "finish_reason": "stop",
                                      "logprobs": {"tokens": ["token_id:5"], "token_logprobs": [-0.5]}}]}  # fmt: skip
                self._send(200, "application/json", json.dumps(reply).encode())

            def _send(self, status: int, ctype: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake() -> Any:
    server = FakeVLLM()
    yield server
    server.close()


def test_lora_sync_speaks_vllms_load_unload_endpoints_in_order(
    fake: FakeVLLM, tiny_dir: Path, tmp_path: Path
) -> None:
    """Unverified against a real vLLM until a GPU run confirms it."""
    policy = load(tiny_dir).add_lora(r=4, alpha=8)
    gen = OpenAIPolicy(fake.url, "base", api="completions", tokenizer=policy.tokenizer, server="vllm",
                       sync_dir=tmp_path / "sync")  # fmt: skip
    assert gen.sync_from(policy, verify=False) == 0.0
    v1 = str((tmp_path / "sync" / "base-v1").resolve())
    assert fake.calls == [("/v1/load_lora_adapter", {"lora_name": "base-v1", "lora_path": v1})]
    assert (Path(v1) / "adapter_config.json").is_file()
    gen.sync_from(policy, verify=False)
    v2 = str((tmp_path / "sync" / "base-v2").resolve())
    assert fake.calls[1:] == [("/v1/load_lora_adapter", {"lora_name": "base-v2", "lora_path": v2}),
                              ("/v1/unload_lora_adapter", {"lora_name": "base-v1"})]  # fmt: skip
    assert not Path(v1).exists() and (Path(v2) / "adapter_config.json").is_file()
    gen.generate([Context(ids=[1, 2])], Sampling(max_new_tokens=2))
    assert fake.calls[-1][0] == "/v1/completions" and fake.calls[-1][1]["model"] == "base-v2"


def test_full_weight_sync_posts_reload_weights_with_the_saved_folder(fake: FakeVLLM, tiny_dir: Path) -> None:
    """Unverified against a real vLLM until a GPU run confirms it (stock vLLM has no such route)."""
    policy = load(tiny_dir)
    gen = OpenAIPolicy(fake.url, "base", api="completions", tokenizer=policy.tokenizer, server="vllm")
    gen.sync_from(policy, verify=False)
    gen.sync_from(policy, verify=False)
    assert [c[0] for c in fake.calls] == ["/reload_weights", "/reload_weights"]
    first, second = (Path(c[1]["model_path"]) for c in fake.calls)
    assert not first.exists() and (second / "config.json").is_file() and gen.model_name == "base"
    sync_dir = gen.sync_dir
    gen.close()
    assert sync_dir is not None and not sync_dir.exists()  # its own temporary folder is removed


def test_sync_errors_say_what_to_do(tiny_dir: Path) -> None:
    policy = load(tiny_dir)
    server = FakeVLLM(fail_path="/reload_weights")
    try:
        with pytest.raises(ValueError, match="tokenizer="):
            OpenAIPolicy(server.url, "base", api="completions").sync_from(policy)
        with pytest.raises(OpenAIError, match="boom"):
            OpenAIPolicy(server.url, "base", api="completions", tokenizer=policy.tokenizer).sync_from(
                policy, verify=False
            )
    finally:
        server.close()


def test_resume_syncs_the_server_and_a_restarted_generator_reuses_adapter_names(
    tiny_dir: Path, tmp_path: Path
) -> None:
    """A resumed trainer pushes the restored weights before collecting; a new OpenAIPolicy (sync
    versions from 1 again) in front of a server that still holds its name unloads it and loads anew."""
    first = load(tiny_dir)
    with start_server(load(tiny_dir), model_name="tiny") as server:
        kw = dict(api="completions", tokenizer=first.tokenizer, server="vllm")
        cfg = config(
            steps=1,
            lora=True,
            out_dir=str(tmp_path / "run"),
            checkpoint_every=1,
            resume=True,
            save_episodes=False,
        )
        with OpenAIPolicy(server.url, "tiny", **kw) as before:
            GRPOTrainer(first, SEARCH_EASY, cfg, generator=before).train()
        again = load(tiny_dir)
        with OpenAIPolicy(server.url, "tiny", **kw) as gen:
            resumed = GRPOTrainer(again, SEARCH_EASY, dataclasses.replace(cfg, steps=2), generator=gen)
            assert resumed.step_idx == 1 and gen.model_name == "tiny-v1"  # the name the first run had loaded
            assert gen.probe_diff(again) < 1e-5 and gen.probe_diff(first) < 1e-5  # the restored weights are served
            served = [m["id"] for m in httpx.get(f"{server.url}/models").json()["data"]]
            assert served == ["tiny", "tiny-v1"]
