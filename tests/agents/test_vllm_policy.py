"""VLLMPolicy on CPU against a fake `vllm` module (tests/agents/fake_vllm) that records calls."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from creditgym.agents import Context, Sampling, tiny
from creditgym.agents.vllm import VLLMPolicy, merged_state_dict

torch.set_num_threads(1)
FAKE = Path(__file__).resolve().parent / "fake_vllm"


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    import vllm

    assert vllm.__file__.startswith(str(FAKE))
    vllm.CALLS.clear()
    yield vllm
    sys.modules.pop("vllm", None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    policy = tiny.build(seed=0, cache_dir=root / "cache", env_ids=())
    return policy, policy.save(root / "model")


def _contexts(tok, n):
    msgs = [[{"role": "user", "content": f"question {i} " * (i + 1)}] for i in range(n)]
    return [
        Context(ids=tok.apply_chat_template(m, tokenize=True, add_generation_prompt=True, return_dict=False))
        for m in msgs
    ]


def test_missing_vllm_or_gpu_gives_clear_errors(monkeypatch, trained):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match=r"creditgym\[vllm\]"):
        VLLMPolicy(trained[1])
    monkeypatch.syspath_prepend(str(FAKE))
    monkeypatch.delitem(sys.modules, "vllm")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            VLLMPolicy(trained[1])
    sys.modules.pop("vllm", None)


def test_old_vllm_without_logprobs_mode_is_refused(fake_vllm, trained):
    fake_vllm.SUPPORTS_LOGPROBS_MODE = False
    try:
        with pytest.raises(ImportError, match=r"0\.10\.1"):
            VLLMPolicy(trained[1], device="cpu")
    finally:
        fake_vllm.SUPPORTS_LOGPROBS_MODE = True


def test_token_in_token_out_with_processed_logprobs(fake_vllm, trained):
    policy, path = trained
    vp = VLLMPolicy(path, device="cpu", llm_kwargs={"enforce_eager": True})
    name, llm_kwargs = fake_vllm.CALLS[0]
    assert name == "LLM" and llm_kwargs["model"] == str(path)
    assert llm_kwargs["logprobs_mode"] == "processed_logprobs" and llm_kwargs["enforce_eager"] is True
    contexts = _contexts(vp.tokenizer, 3)
    gens = vp.generate(contexts, Sampling(temperature=0.8, max_new_tokens=10, seed=4, stop=("</answer>",)))
    params = [kw for n, kw in fake_vllm.CALLS if n == "SamplingParams"]
    assert [p["seed"] for p in params] == [4, 5, 6]
    assert all(p["top_p"] == 1.0 and p["top_k"] == -1 and p["logprobs"] == 0 for p in params)
    assert all(p["include_stop_str_in_output"] and p["stop"] == ["</answer>"] for p in params)
    assert ("generate", {"n_prompts": 3, "use_tqdm": False}) in fake_vllm.CALLS
    for ctx, g in zip(contexts, gens):
        full = torch.tensor([list(ctx.ids) + list(g.token_ids)])
        forced = policy.logprobs(full, torch.ones_like(full), temperature=0.8)[0, len(ctx.ids) :]
        assert len(g.token_ids) == len(g.logprobs) > 0
        assert (forced - torch.tensor(g.logprobs)).abs().max() < 1e-4
        assert g.finish_reason in ("stop", "length")
    with pytest.raises(ValueError, match=r"top_p=0\.9"):
        vp.generate(contexts, Sampling(top_p=0.9))
    with pytest.raises(ValueError, match=r"Context\.ids"):
        vp.generate([Context(messages=[{"role": "user", "content": "x"}])], Sampling())
    assert vp.generate([], Sampling()) == []


def test_sync_from_updates_weights_in_place_and_probe_verifies(fake_vllm, trained, tmp_path):
    _, path = trained
    vp = VLLMPolicy(path, device="cpu")
    student = tiny.build(seed=0, cache_dir=tmp_path, env_ids=())
    with torch.no_grad():
        for p in student.model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    assert vp.probe_diff(student) > 1e-3  # the engine still has the old weights
    diff = vp.sync_from(student, atol=1e-4)
    assert diff < 1e-4
    names = [n for n, _ in fake_vllm.CALLS]
    assert names.index("apply_model") < names.index("reset_prefix_cache")
    loaded = next(kw for n, kw in fake_vllm.CALLS if n == "load_weights")
    assert set(loaded) == set(student.model.state_dict())
    student.add_lora(r=2)
    with torch.no_grad():
        for n, p in student.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    assert vp.probe_diff(student) > 1e-3
    assert vp.sync_from(student, atol=1e-4) < 1e-4
    merged = merged_state_dict(student.model)
    assert not any("lora" in k or "base_layer" in k for k in merged)
    with torch.no_grad():
        next(p for n, p in student.model.named_parameters() if "lora_B" in n).add_(1.0)
    vp.update_weights = lambda weights: len(weights)  # an engine that silently ignores the update
    with pytest.raises(RuntimeError, match="weight sync check failed"):
        vp.sync_from(student, atol=1e-4)
    assert vp.sync_from(student, verify=False) == 0.0


@pytest.mark.gpu
def test_real_vllm_generation_and_sync(trained):
    pytest.importorskip("vllm", reason="needs the real vllm package")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    policy, path = trained
    vp = VLLMPolicy(path, dtype="float32", gpu_memory_utilization=0.2)
    gens = vp.generate(_contexts(vp.tokenizer, 4), Sampling(max_new_tokens=16, seed=0))
    assert all(len(g.token_ids) == len(g.logprobs) for g in gens)
    assert vp.sync_from(policy, atol=1e-3) < 1e-3
