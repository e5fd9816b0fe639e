"""Tiny offline models: a few-million-parameter Qwen2 decoder from seeded random init and a small
byte-level BPE tokenizer trained on text the registered creditgym envs generate.

    policy = tiny.build(seed=0)          # HFPolicy; built in seconds, then cached and reused

The tokenizer corpus is the reset observations and scripted-expert actions of every registered
`creditgym/` env that builds (others are skipped), plus a built-in fallback corpus holding the
protocol tags, so the tags are always single tokens. The build is cached under
`$CREDITGYM_CACHE/tiny/<hash>` (default `~/.cache/creditgym/tiny/<hash>`), the hash covering the
model config, the seed, the env ids the corpus came from and `CORPUS_VERSION`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium
import torch

import creditgym  # noqa: F401  (registers the env ids the tokenizer corpus is read from)
from creditgym.agents.base import Context, Sampling
from creditgym.agents.hf import HFPolicy
from creditgym.agents.scripted import ScriptedPolicy

__all__ = [
    "CHAT_TEMPLATE",
    "PROTOCOL_TAGS",
    "TinyConfig",
    "build",
    "build_tokenizer",
    "collect_corpus",
    "default_cache_root",
]

log = logging.getLogger(__name__)

CORPUS_VERSION = 1  # bump when the tokenizer recipe, template or fallback corpus changes
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Tags of the env protocols (ENVS.md): kept whole as single (non-special) tokens.
PROTOCOL_TAGS = (
    "<think>", "</think>", "<search>", "</search>", "<information>", "</information>",
    "<answer>", "</answer>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
)  # fmt: skip

# ChatML (system / user / assistant / tool): `<|im_start|>role\ncontent<|im_end|>\n` per message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] if message['content'] is defined and message['content'] is not none else '')"
    " + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_FALLBACK_CORPUS = [
    "Answer the question. Think inside <think> and </think>, search with <search> query </search>; "
    "results come back inside <information> and </information>. Give the final answer as <answer> text </answer>.",
    "<think>I need to find who founded the company first.</think>\n<search>founder of the company</search>",
    "<information>Doc 1 (Title: Example) The city lies on the river. Doc 2 (Title: Other) It was built in 1921."
    "</information>",
    "<answer>Paris</answer>",
    'Call a tool with <tool_call>{"name": "calculator", "arguments": {"expression": "12 * (3 + 4)"}}</tool_call>',
    '<tool_response>{"result": 84}</tool_response>',
    "Invalid action: reply with one action in tags, for example <answer>42</answer>.",
    "You are a helpful assistant. The user asks; you reply. system user assistant tool",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 3.14 -7 + - * / = ( ) [ ] { } : ; , . ! ? ' \" # $ % & @ _ | ~ ^ `",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "Tap the button, open the settings screen, scroll down, type the text, go back, press enter.",
    "I cannot help with that request. Here is a safe alternative instead.",
    "def f(x):\n    return x * 2\nprint(f(21))\n",
    "| name | value |\n|------|-------|\n| a | 1 |\n| b | 2 |\n",
]


@dataclass(frozen=True)
class TinyConfig:
    """Model and tokenizer sizes (defaults give about 3.5M parameters)."""

    vocab_size: int = 2048  # BPE target, specials and tags included
    hidden_size: int = 256
    intermediate_size: int = 768
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    initializer_range: float = 0.02
    episodes_per_env: int = 4  # corpus: reset/step episodes per registered env
    max_steps: int = 8  # corpus: scripted steps per episode


def default_cache_root() -> Path:
    """`$CREDITGYM_CACHE` if set, else `~/.cache/creditgym`."""
    return Path(os.environ.get("CREDITGYM_CACHE", Path.home() / ".cache" / "creditgym"))


def registered_env_ids() -> list[str]:
    return sorted(k for k in gymnasium.registry if k.startswith("creditgym/"))


def _episode_texts(env_id: str, seed: int, max_steps: int, policies: dict[str | None, Any]) -> list[str]:
    env = gymnasium.make(env_id)
    try:
        obs, info = env.reset(seed=seed)
        texts, ctx = [obs], Context(obs_texts=[obs], env_id=env_id)
        for _ in range(max_steps):
            role = info.get("role")
            if role not in policies:
                try:
                    policies[role] = ScriptedPolicy.for_env(env_id, role=role)
                except KeyError:
                    policies[role] = None
            if policies[role] is None:
                break
            ctx.role = role or "agent"
            action = policies[role].generate([ctx], Sampling())[0].text
            obs, _, terminated, truncated, info = env.step(action)
            ctx.action_texts.append(action)
            ctx.obs_texts.append(obs)
            texts += [action, obs]
            if terminated or truncated:
                break
        return texts
    finally:
        env.close()


def collect_corpus(
    env_ids: Iterable[str] | None = None, episodes_per_env: int = 4, max_steps: int = 8
) -> tuple[list[str], list[str]]:
    """Texts of scripted episodes of each env (reset observations, expert actions, replies) and the
    ids that contributed; an env that fails to build or step is skipped with a log message."""
    ids = registered_env_ids() if env_ids is None else list(env_ids)
    texts, used = list(_FALLBACK_CORPUS), []
    for env_id in ids:
        policies: dict[str | None, Any] = {}
        try:
            env_texts = [
                t for s in range(episodes_per_env) for t in _episode_texts(env_id, s, max_steps, policies)
            ]
        except Exception as e:  # envs are written in parallel: a broken one must not break the build
            log.warning("tiny tokenizer corpus: skipping %s (%s: %s)", env_id, type(e).__name__, e)
            continue
        texts += env_texts
        used.append(env_id)
    return texts, used


def build_tokenizer(texts: Sequence[str], vocab_size: int = 2048) -> Any:
    """Byte-level BPE (Sennrich et al. 2016, arXiv:1508.07909) trained on `texts`, wrapped as a
    transformers fast tokenizer with the ChatML chat template and eos/pad tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [PAD, IM_START, IM_END]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in PROTOCOL_TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def _init_weights(model: torch.nn.Module, seed: int, std: float) -> None:
    """Seeded init from our own generator: normal(0, std) for matrices, ones for norms, zeros for biases."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * std)


def _make_model(cfg: TinyConfig, vocab_size: int, tokenizer: Any, seed: int) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    mcfg = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        initializer_range=cfg.initializer_range,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):  # transformers' own init draws from the global RNG
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(mcfg)
    _init_weights(model, seed, cfg.initializer_range)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def _cache_key(cfg: TinyConfig, seed: int, env_ids: Sequence[str]) -> str:
    blob = json.dumps(
        {
            "cfg": asdict(cfg),
            "seed": seed,
            "envs": list(env_ids),
            "v": CORPUS_VERSION,
            "template": CHAT_TEMPLATE,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build(
    seed: int = 0,
    cache_dir: str | Path | None = None,
    config: TinyConfig | None = None,
    env_ids: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    rebuild: bool = False,
    **policy_kw: Any,
) -> HFPolicy:
    """Build (or load from cache) the tiny model for `seed` and return it as an HFPolicy.

    `cache_dir`: where builds live (default `default_cache_root() / "tiny"`); `env_ids`: envs whose
    text trains the tokenizer (default every registered `creditgym/` env); `rebuild=True` ignores a
    cached build; `policy_kw` go to HFPolicy (e.g. `max_batch_size`).
    """
    cfg = config or TinyConfig()
    ids = registered_env_ids() if env_ids is None else sorted(env_ids)
    root = Path(cache_dir) if cache_dir is not None else default_cache_root() / "tiny"
    target = root / _cache_key(cfg, seed, ids)
    if rebuild and target.exists():
        shutil.rmtree(target, ignore_errors=True)
    if not (target / "creditgym_tiny.json").is_file():
        _build_into(target, cfg, seed, ids)
    policy = HFPolicy.from_pretrained(target, name=f"tiny-seed{seed}", seed=seed, **policy_kw)
    return policy.to(device) if device is not None else policy


def _build_into(target: Path, cfg: TinyConfig, seed: int, env_ids: Sequence[str]) -> None:
    texts, used = collect_corpus(env_ids, cfg.episodes_per_env, cfg.max_steps)
    tokenizer = build_tokenizer(texts, cfg.vocab_size)
    model = _make_model(cfg, len(tokenizer), tokenizer, seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is meant to be shared
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        meta = {"config": asdict(cfg), "seed": seed, "env_ids": list(env_ids), "corpus_envs": used,
                "corpus_texts": len(texts), "version": CORPUS_VERSION,
                "params": sum(p.numel() for p in model.parameters())}  # fmt: skip
        (tmp / "creditgym_tiny.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, target)  # atomic: parallel builders never see a half-written dir
        except OSError:
            if not (target / "creditgym_tiny.json").is_file():
                raise
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    log.info("built tiny model (%d params, corpus from %s) into %s", meta["params"], used, target)
