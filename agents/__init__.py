"""Policies (scripted, HF, vLLM, OpenAI-compatible), the rollout Collector and probes.

Heavy backends are imported on first attribute access, so `import creditgym.agents` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from creditgym.agents.base import Context, Generation, Policy, Sampling, TrainablePolicy
from creditgym.agents.byte_tokenizer import ByteTokenizer
from creditgym.agents.scripted import RandomPolicy, ScriptedPolicy
from creditgym.registry import register_scripted

_LAZY: dict[str, str] = {
    "HFPolicy": "creditgym.agents.hf",
    "VLLMPolicy": "creditgym.agents.vllm",
    "OpenAIPolicy": "creditgym.agents.openai",
    "Collector": "creditgym.agents.rollout",
    "GoldAnswerProbe": "creditgym.agents.probes",
    "SIOPProbe": "creditgym.agents.probes",
    "tiny": "creditgym.agents.tiny",
    "pretrained": "creditgym.agents.pretrained",
    "offline": "creditgym.agents.offline",
    "induction": "creditgym.agents.induction",
}

__all__ = [
    "ByteTokenizer",
    "Context",
    "Generation",
    "Policy",
    "RandomPolicy",
    "Sampling",
    "ScriptedPolicy",
    "TrainablePolicy",
    "register_scripted",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if _LAZY[name].endswith("." + name) else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'creditgym.agents' has no attribute {name!r}")
