"""tiny.build: a small seeded Qwen2 + BPE tokenizer with ChatML, cached and reused."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest
import torch

from creditgym.agents import HFPolicy, tiny
from creditgym.agents.tiny import PROTOCOL_TAGS, TinyConfig

torch.set_num_threads(1)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_env.py"


def _load_example_env():
    """examples/custom_env.py under the module name the other test files use (the registry refuses
    one id registered from two module names)."""
    name = "creditgym_example_custom_env"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return root, tiny.build(seed=0, cache_dir=root, env_ids=())


def test_build_gives_small_hf_policy(built):
    _, policy = built
    assert isinstance(policy, HFPolicy)
    n_params = sum(p.numel() for p in policy.model.parameters())
    assert 1_000_000 < n_params < 10_000_000
    assert len(policy.tokenizer) <= 4096
    assert policy.model.get_input_embeddings().weight.shape[0] == len(policy.tokenizer)
    assert all(p.dtype == torch.float32 for p in policy.model.parameters())


def test_tokenizer_specials_tags_and_round_trip(built):
    tok = built[1].tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id != tok.pad_token_id
    for tag in PROTOCOL_TAGS:
        assert len(tok.encode(tag, add_special_tokens=False)) == 1, tag
    text = "<think>plan</think>\n<search>capital of France</search> ünïcode ✓ 12*7=84"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text


def test_chat_template_is_chatml_for_every_role(built):
    tok = built[1].tokenizer
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": '<tool_call>{"name": "calc"}</tool_call>'},
        {"role": "tool", "content": "4"},
    ]
    ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
    expected = (
        "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs)
        + "<|im_start|>assistant\n"
    )
    assert tok.decode(ids) == expected
    # the template is prefix-stable: appending a message only appends tokens (template deltas work)
    head = tok.apply_chat_template(msgs[:2], tokenize=True, return_dict=False)
    assert ids[: len(head)] == head
    assert (
        tok.apply_chat_template([{"role": "user", "content": None}], tokenize=False)
        == "<|im_start|>user\n<|im_end|>\n"
    )


def test_cached_build_is_reused(built, monkeypatch):
    root, policy = built
    dirs = [d for d in root.iterdir() if d.is_dir()]
    assert len(dirs) == 1 and (dirs[0] / "creditgym_tiny.json").is_file()
    meta = json.loads((dirs[0] / "creditgym_tiny.json").read_text())
    assert meta["seed"] == 0 and meta["env_ids"] == []

    def boom(*a, **k):
        raise AssertionError("a cached build must not be rebuilt")

    monkeypatch.setattr(tiny, "collect_corpus", boom)
    again = tiny.build(seed=0, cache_dir=root, env_ids=())
    for a, b in zip(policy.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(AssertionError, match="must not be rebuilt"):
        tiny.build(seed=0, cache_dir=root, env_ids=(), rebuild=True)


def test_build_is_deterministic_and_seed_dependent(built, tmp_path):
    _, policy = built
    same = tiny.build(seed=0, cache_dir=tmp_path / "a", env_ids=())
    other = tiny.build(seed=1, cache_dir=tmp_path / "b", env_ids=())
    assert same.tokenizer.get_vocab() == policy.tokenizer.get_vocab()
    w0 = policy.model.get_input_embeddings().weight
    assert torch.equal(same.model.get_input_embeddings().weight, w0)
    assert not torch.equal(other.model.get_input_embeddings().weight, w0)
    state = torch.random.get_rng_state()
    tiny.build(
        seed=2,
        cache_dir=tmp_path / "c",
        env_ids=(),
        config=TinyConfig(hidden_size=64, num_layers=1, intermediate_size=128),
    )
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone


def test_corpus_from_registered_env_and_broken_env_is_skipped(caplog):
    module = _load_example_env()
    with caplog.at_level(logging.WARNING, logger="creditgym.agents.tiny"):
        texts, used = tiny.collect_corpus(
            [module.ENV_ID, "creditgym/DoesNotExist-v0"], episodes_per_env=2, max_steps=3
        )
    assert used == [module.ENV_ID]
    assert any("I picked an integer" in t for t in texts)
    assert any("<guess>" in t for t in texts)  # the scripted expert's actions are in the corpus
    assert "DoesNotExist" in caplog.text
    assert any("<search>" in t for t in texts)  # the fallback corpus is always there


def test_default_build_uses_registered_envs(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDITGYM_CACHE", str(tmp_path))
    policy = tiny.build(seed=0, config=TinyConfig(hidden_size=64, num_layers=1, intermediate_size=128))
    (built_dir,) = (tmp_path / "tiny").iterdir()
    meta = json.loads((built_dir / "creditgym_tiny.json").read_text())
    assert meta["env_ids"] == tiny.registered_env_ids()
    assert set(meta["corpus_envs"]) <= set(meta["env_ids"])
    assert policy.tokenizer.decode(policy.tokenizer.encode("<answer>x</answer>")) == "<answer>x</answer>"
