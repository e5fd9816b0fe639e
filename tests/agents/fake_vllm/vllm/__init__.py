"""A small stand-in for the `vllm` package, for testing VLLMPolicy on CPU.

`LLM` wraps a real transformers model loaded from the given directory and decodes with a plain
(no-cache) loop, so logprobs and weight updates are real; every call is recorded in `CALLS`.
Set `SUPPORTS_LOGPROBS_MODE = False` to act like vLLM < 0.10.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

CALLS: list[tuple[str, Any]] = []
SUPPORTS_LOGPROBS_MODE = True
_SAMPLING_FIELDS = {
    "n", "temperature", "top_p", "top_k", "max_tokens", "stop", "include_stop_str_in_output",
    "logprobs", "seed", "skip_special_tokens",
}  # fmt: skip


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class SamplingParams:
    def __init__(self, **kwargs: Any):
        unknown = set(kwargs) - _SAMPLING_FIELDS
        if unknown:
            raise TypeError(f"SamplingParams got unexpected keyword arguments {sorted(unknown)}")
        self.__dict__.update(kwargs)
        CALLS.append(("SamplingParams", kwargs))


@dataclass
class _Worker:
    model: torch.nn.Module
    loaded: list[str] = field(default_factory=list)

    def load_weights(self, weights):
        own = self.model.state_dict()
        names = set()
        with torch.no_grad():
            for name, tensor in weights:
                key = name if name in own else None
                if key is None:
                    raise KeyError(f"fake vllm: unknown weight {name}")
                own[key].copy_(tensor)
                names.add(name)
        self.loaded += sorted(names)
        CALLS.append(("load_weights", sorted(names)))
        return names


class LLM:
    def __init__(self, model: str, **kwargs: Any):
        if "logprobs_mode" in kwargs and not SUPPORTS_LOGPROBS_MODE:
            raise TypeError("LLM.__init__() got an unexpected keyword argument 'logprobs_mode'")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        CALLS.append(("LLM", {"model": model, **kwargs}))
        self._tok = AutoTokenizer.from_pretrained(model)
        self._worker = _Worker(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval())
        self._eos = self._tok.eos_token_id

    def get_tokenizer(self):
        return self._tok

    def apply_model(self, fn):
        CALLS.append(("apply_model", None))
        return [fn(self._worker)]

    def reset_prefix_cache(self):
        CALLS.append(("reset_prefix_cache", None))
        return True

    def generate(self, prompts, params, use_tqdm: bool = True):
        CALLS.append(("generate", {"n_prompts": len(prompts), "use_tqdm": use_tqdm}))
        return [self._one(p["prompt_token_ids"], sp) for p, sp in zip(prompts, params)]

    @torch.no_grad()
    def _one(self, prompt_ids: list[int], sp: SamplingParams):
        gen = torch.Generator().manual_seed(sp.seed if sp.seed is not None else 0)
        ids, out_ids, out_lps, finish = list(prompt_ids), [], [], "length"
        for _ in range(sp.max_tokens):
            logits = self._worker.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            greedy = sp.temperature == 0
            logp = torch.log_softmax(logits / (1.0 if greedy else sp.temperature), -1)
            tok = int(logp.argmax()) if greedy else int(torch.multinomial(logp.exp(), 1, generator=gen))
            ids.append(tok)
            out_ids.append(tok)
            out_lps.append({tok: Logprob(float(logp[tok]), 1)})
            text = self._tok.decode(out_ids, skip_special_tokens=sp.skip_special_tokens)
            if tok == self._eos or any(s in text for s in (sp.stop or [])):
                finish = "stop"
                break
        text = self._tok.decode(out_ids, skip_special_tokens=sp.skip_special_tokens)
        comp = SimpleNamespace(token_ids=out_ids, logprobs=out_lps, text=text, finish_reason=finish)
        return SimpleNamespace(prompt_token_ids=prompt_ids, outputs=[comp])
