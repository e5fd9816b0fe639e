"""VLLMPolicy: an in-process `vllm.LLM` as a fast generator (GPU; optional extra `creditgym[vllm]`).

Token-in, token-out: prompts go in as token ids (`Context.ids`) and the sampled ids come back
as vLLM produced them. Logprobs are vLLM's *processed* logprobs (`logprobs_mode=
"processed_logprobs"`, vLLM >= 0.10.1): log_softmax of the temperature-scaled logits, which is the
design's definition (ARCHITECTURE.md, "Policies") exactly when no top-p/top-k filter renormalises
them, so generation here requires `top_p=1` and `top_k=0` (vLLM's -1). A trainer keeps its
HFPolicy for updates and pushes new weights in place with `sync_from(policy)` (no checkpoint on
disk), which then checks a probe prompt against the trainer's own teacher-forced logprobs.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from creditgym.agents.base import Context, Generation, Sampling

__all__ = ["VLLMPolicy", "merged_state_dict"]

log = logging.getLogger(__name__)
_INSTALL = "pip install 'creditgym[vllm]' (needs a CUDA GPU; vLLM cannot be installed on CPU-only machines)"


def _import_vllm() -> Any:
    try:
        return importlib.import_module("vllm")
    except ImportError as e:
        raise ImportError(f"VLLMPolicy needs vllm: {_INSTALL}. On CPU use HFPolicy instead") from e


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Plain Hugging Face weight names and tensors of `model`, LoRA adapters merged in (W + BA,
    Hu et al. 2021, arXiv:2106.09685); the model itself is left unmerged."""
    if not (hasattr(model, "merge_adapter") and hasattr(model, "peft_config")):
        return {k: v.detach() for k, v in model.state_dict().items()}
    model.merge_adapter()
    try:
        out = {}
        for name, tensor in model.get_base_model().state_dict().items():
            if "lora_" in name:
                continue
            out[name.replace(".base_layer.", ".")] = tensor.detach().clone()
        return out
    finally:
        model.unmerge_adapter()


class VLLMPolicy:
    """Generate with vLLM. `model`: a local HF model directory (e.g. `pretrained.cached_dir(...)` or
    a saved HFPolicy); `llm_kwargs` go to `vllm.LLM`; `device="cuda"` requires a visible GPU."""

    def __init__(
        self,
        model: str | Path,
        tokenizer: Any = None,
        dtype: str = "float32",
        seed: int = 0,
        gpu_memory_utilization: float = 0.4,
        max_model_len: int | None = None,
        device: str = "cuda",
        llm_kwargs: Mapping[str, Any] | None = None,
    ):
        vllm = _import_vllm()
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "VLLMPolicy(device='cuda') found no CUDA GPU; on CPU use HFPolicy (the CPU default)"
            )
        kwargs: dict[str, Any] = {
            "model": str(model),
            "dtype": dtype,
            "seed": int(seed),
            "gpu_memory_utilization": float(gpu_memory_utilization),
            "logprobs_mode": "processed_logprobs",
            "enable_prefix_caching": True,
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = int(max_model_len)
        kwargs.update(llm_kwargs or {})
        try:
            self.llm = vllm.LLM(**kwargs)
        except TypeError as e:
            if "logprobs_mode" in str(e):
                raise ImportError(f"VLLMPolicy needs vllm >= 0.10.1 (logprobs_mode): {_INSTALL}") from e
            raise
        self._vllm = vllm
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()
        self.model_path = str(model)

    # ----------------------------------------------------------------- generation
    def _params(self, sampling: Sampling, index: int) -> Any:
        if sampling.top_p < 1.0 or sampling.top_k > 0:
            raise ValueError(
                f"VLLMPolicy records processed logprobs, which top_p={sampling.top_p} / top_k={sampling.top_k} "
                "would renormalise; use top_p=1.0 and top_k=0 (the design's logprob semantics), or HFPolicy"
            )
        return self._vllm.SamplingParams(
            n=1,
            temperature=max(0.0, float(sampling.temperature)),
            top_p=1.0,
            top_k=-1,
            max_tokens=int(sampling.max_new_tokens),
            stop=list(sampling.stop) or None,
            include_stop_str_in_output=True,
            logprobs=0,  # the sampled token's logprob only
            seed=None if sampling.seed is None else int(sampling.seed) + index,
            skip_special_tokens=True,
        )

    def generate(self, contexts: list[Context], sampling: Sampling) -> list[Generation]:
        """One continuation per context; prompts are sent as token ids."""
        if not contexts:
            return []
        prompts = []
        for ctx in contexts:
            if not ctx.ids:
                raise ValueError(
                    "VLLMPolicy needs Context.ids (token-in, token-out); the Collector fills them"
                )
            prompts.append({"prompt_token_ids": [int(i) for i in ctx.ids]})
        params = [self._params(sampling, i) for i in range(len(contexts))]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [self._to_generation(out) for out in outputs]

    @staticmethod
    def _to_generation(out: Any) -> Generation:
        comp = out.outputs[0]
        ids = [int(i) for i in comp.token_ids]
        lps: list[float] = []
        for tok, entry in zip(ids, comp.logprobs or [None] * len(ids)):
            lp: Any = (
                entry.get(tok) if hasattr(entry, "get") else None
            )  # dict or vLLM's flat per-position view
            if lp is None:
                raise RuntimeError(
                    f"vLLM returned no logprob for sampled token {tok}; is SamplingParams.logprobs set?"
                )
            lps.append(float(getattr(lp, "logprob", lp)))
        finish = "length" if comp.finish_reason == "length" else "stop"
        return Generation(tuple(ids), tuple(lps), comp.text, finish)

    # ----------------------------------------------------------------- weight sync
    def update_weights(self, weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> int:
        """Load (HF-named) weights into the running engine in place; returns how many tensors went in."""
        items = list(weights.items()) if isinstance(weights, Mapping) else list(weights)
        if not items:
            raise ValueError("update_weights got no tensors")

        def load(model: Any) -> Any:
            return model.load_weights(weights=items)

        if hasattr(self.llm, "apply_model"):
            self.llm.apply_model(load)
        else:  # older engines: reach the single in-process worker's model
            load(self.llm.llm_engine.model_executor.driver_worker.model_runner.model)
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()  # cached KV was computed with the old weights
        return len(items)

    def sync_from(
        self, policy: Any, verify: bool = True, probe_ids: Sequence[int] | None = None, atol: float = 1e-2
    ) -> float:
        """Push `policy.model`'s weights (LoRA merged) into vLLM, then (if `verify`) greedily sample a
        few tokens from a probe prompt and compare vLLM's logprobs with `policy.logprobs` on the same
        ids; returns the max abs difference, raising if it exceeds `atol` (use ~5e-2 for bf16)."""
        self.update_weights(merged_state_dict(policy.model))
        if not verify:
            return 0.0
        diff = self.probe_diff(policy, probe_ids)
        if diff > atol:
            raise RuntimeError(
                f"weight sync check failed: vLLM and the trained policy disagree by {diff:.3g} (> atol={atol}) "
                "on the probe prompt; check weight names and dtype (dtype='float32' for exact agreement)"
            )
        return diff

    def probe_diff(self, policy: Any, probe_ids: Sequence[int] | None = None, n_tokens: int = 8) -> float:
        """Max |vLLM logprob - policy logprob| over a greedy continuation of the probe prompt."""
        ids = list(probe_ids) if probe_ids else self._default_probe()
        gen = self.generate([Context(ids=ids)], Sampling(temperature=0.0, max_new_tokens=n_tokens))[0]
        full = torch.tensor([ids + list(gen.token_ids)])
        forced = policy.logprobs(full, torch.ones_like(full))[0, len(ids) :].cpu()
        return float((forced - torch.tensor(gen.logprobs)).abs().max()) if gen.token_ids else 0.0

    def _default_probe(self) -> list[int]:
        msgs = [{"role": "user", "content": "Name the capital of France."}]
        ids = self.tokenizer.apply_chat_template(
            msgs, tokenize=True, add_generation_prompt=True, return_dict=False
        )
        return [int(i) for i in ids]
