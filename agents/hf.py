"""HFPolicy: a transformers causal LM as a trainable Policy (the CPU default).

Generation is our own decode loop (left padding, KV cache, seeded `torch.Generator`) so that the
per-token logprobs it records follow the one definition of ARCHITECTURE.md ("Policies"):
`log_softmax(logits / temperature)` over the full vocabulary at the sampled token, without
top-p/top-k renormalisation (temperature 0 = greedy, logprobs at temperature 1). `logprobs(...)`
recomputes the same quantity teacher-forced, so recorded and recomputed values agree.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from creditgym.agents.base import Context, Generation, Sampling, TrainablePolicy
from creditgym.agents.logprobs import masked_logprobs, token_logprobs

__all__ = ["HFPolicy", "filter_logits", "sample_categorical"]

log = logging.getLogger(__name__)


def _position_ids(attention_mask_BT: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left and right padding give the same values."""
    return (attention_mask_BT.long().cumsum(-1) - 1).clamp(min=0)


def filter_logits(scaled_BV: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then top-p (nucleus, Holtzman et al. 2019, arXiv:1904.09751) filtering: dropped
    tokens get -inf. Used only to choose the token, never for the recorded logprob."""
    vocab = scaled_BV.shape[-1]
    if 0 < top_k < vocab:
        kth_B1 = torch.topk(scaled_BV, top_k, dim=-1).values[:, -1:]
        scaled_BV = scaled_BV.masked_fill(scaled_BV < kth_B1, float("-inf"))
    if top_p < 1.0:
        sorted_BV, idx_BV = scaled_BV.sort(dim=-1, descending=True)
        probs_BV = sorted_BV.softmax(-1)
        drop_sorted_BV = (probs_BV.cumsum(-1) - probs_BV) >= top_p
        drop_sorted_BV[:, 0] = False
        drop_BV = torch.zeros_like(drop_sorted_BV).scatter(-1, idx_BV, drop_sorted_BV)
        scaled_BV = scaled_BV.masked_fill(drop_BV, float("-inf"))
    return scaled_BV


def sample_categorical(probs_BV: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One draw per row by inverting the CDF (float64 cumsum, one uniform per row): the same
    distribution as `torch.multinomial(probs, 1)`, several times faster on CPU for large vocabularies.
    Rows need not be normalised; zero-probability tokens are never drawn."""
    cdf_BV = probs_BV.double().cumsum(-1)
    u_B1 = torch.rand((probs_BV.shape[0], 1), generator=gen, device=probs_BV.device, dtype=torch.float64)
    tok_B1 = torch.searchsorted(cdf_BV, u_B1 * cdf_BV[:, -1:], right=True)
    return tok_B1.squeeze(-1).clamp_(max=probs_BV.shape[-1] - 1)


class HFPolicy:
    """A transformers causal LM (optionally with peft LoRA adapters) behind the Policy protocol.

    `max_batch_size` bounds rows per forward pass in `generate` and in `logprobs(grad=False)`, where
    `logits_budget_bytes` also bounds the logits of one chunk (full-vocabulary logits of long rows
    are large: 1024 tokens x 49k vocab is 200 MB per row);
    `seed` seeds the generator used when `Sampling.seed` is None (calls then differ from each
    other but a run is reproducible).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        max_batch_size: int = 64,
        seed: int = 0,
        eos_token_ids: Sequence[int] | None = None,
        name: str = "",
        logits_budget_bytes: int = 2**30,
    ):
        self.model = model
        self.logits_budget_bytes = int(logits_budget_bytes)
        self.tokenizer = tokenizer
        self.max_batch_size = int(max_batch_size)
        self.name = (
            name or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        )
        self.seed = int(seed)
        if eos_token_ids is None:
            eos_token_ids = self._default_eos_ids()
        self.eos_token_ids = frozenset(int(i) for i in eos_token_ids)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id = (
            int(pad) if pad is not None else (min(self.eos_token_ids) if self.eos_token_ids else 0)
        )
        self._gen: torch.Generator | None = None
        self._pieces: list[str] | None = None
        self._could_end: dict[tuple[str, ...], list[bool]] = {}
        self._cache_kw = self._cache_kwarg_name()
        self._head_split_ok: bool | None = None  # forward_logits_at's one-time check

    # ----------------------------------------------------------------- construction helpers
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        **kw: Any,
    ) -> HFPolicy:
        """Load a local Hugging Face model directory (weights + tokenizer), offline."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)
        model.eval()
        policy = cls(model, tok, name=kw.pop("name", path.name), **kw)
        return policy.to(device) if device is not None else policy

    def save(self, path: str | Path) -> Path:
        """Write model (safetensors) and tokenizer to `path`; `HFPolicy.from_pretrained(path)` reloads it."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))
        return path

    def _default_eos_ids(self) -> list[int]:
        ids: set[int] = set()
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is not None:
            ids.add(int(eos))
        gen_cfg = getattr(self.model, "generation_config", None)
        cfg_eos = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
        if isinstance(cfg_eos, int):
            ids.add(cfg_eos)
        elif isinstance(cfg_eos, (list, tuple)):
            ids.update(int(i) for i in cfg_eos)
        return sorted(ids)

    def base_model(self) -> torch.nn.Module:
        """The model without its peft wrapper (the model itself when no LoRA adapter is on)."""
        get = getattr(self.model, "get_base_model", None)
        return get() if callable(get) else self.model

    def _cache_kwarg_name(self) -> str:
        params = inspect.signature(type(self.base_model()).forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    # ----------------------------------------------------------------- device, adapters
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> HFPolicy:
        """Move the model to `device` (in place) and return self."""
        self.model.to(device)
        self._gen = None
        return self

    def clone(self) -> HFPolicy:
        """An independent trainable copy: the weights deep-copied, the tokenizer shared, the same seed
        (e.g. one arm of a comparison trained from a shared warm start)."""
        return HFPolicy(copy.deepcopy(self.model), self.tokenizer, seed=self.seed)

    @property
    def has_adapter(self) -> bool:
        return hasattr(self.model, "disable_adapter") and hasattr(self.model, "peft_config")

    def add_lora(
        self, r: int = 8, alpha: int = 16, dropout: float = 0.0, target_modules: Sequence[str] | None = None
    ) -> HFPolicy:
        """Wrap the model in a peft LoRA adapter (Hu et al. 2021, arXiv:2106.09685); only adapter
        weights stay trainable. Returns self."""
        from peft import LoraConfig, get_peft_model

        targets = list(target_modules) if target_modules else ["q_proj", "k_proj", "v_proj", "o_proj"]
        cfg = LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM"
        )
        self.model = get_peft_model(self.model, cfg)
        self._head_split_ok = None
        return self

    @contextlib.contextmanager
    def reference(self) -> Iterator[HFPolicy]:
        """Inside this block the policy is its own reference model: LoRA adapters are switched off
        (for KL-to-reference passes without a second copy of the weights)."""
        if not self.has_adapter:
            raise ValueError(
                "policy.reference() needs a peft LoRA adapter to switch off; this model has none. "
                "Call policy.add_lora(...) first, or keep a frozen copy of the model as the reference"
            )
        with self.model.disable_adapter():
            yield self

    def sync_from(self, policy: TrainablePolicy) -> None:
        """Copy `policy.model`'s weights into this model (an HFPolicy as a trainer's `generator=`)."""
        self.model.load_state_dict(policy.model.state_dict())

    # ----------------------------------------------------------------- teacher-forced passes
    def forward_logits(
        self, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, logits_to_keep: int = 0
    ) -> torch.Tensor:
        """Logits `[B, T, V]` of a teacher-forced forward pass (with gradients if enabled); with
        `logits_to_keep=k > 0` only the last k positions' `[B, k, V]` (the LM head skips the rest)."""
        dev = self.device
        ids_BT, attention_mask_BT = ids_BT.to(dev), attention_mask_BT.to(dev)
        kw = {"logits_to_keep": int(logits_to_keep)} if logits_to_keep > 0 else {}
        out = self.model(
            input_ids=ids_BT, attention_mask=attention_mask_BT, position_ids=_position_ids(attention_mask_BT), **kw
        )
        return out.logits[:, -logits_to_keep:] if logits_to_keep > 0 else out.logits

    def forward_logits_at(
        self, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, positions_BT: torch.Tensor
    ) -> torch.Tensor:
        """Logits `[N, V]` at the N positions where `positions_BT` is True (row-major order), equal to
        `forward_logits(ids_BT, attention_mask_BT)[positions_BT]`: the decoder runs over every position,
        the LM head only over these (with gradients if enabled). On CPU the LM head and the softmax over
        `[B, T, V]` are a third of a training pass when a loss reads a tenth of the positions.

        The first call checks the decoder-then-head path against `forward_logits` on one row (a model
        with extra logit post-processing, e.g. soft-capping, fails it) and falls back to slicing the
        full logits from then on."""
        dev = self.device
        ids_BT, attention_mask_BT, positions_BT = ids_BT.to(dev), attention_mask_BT.to(dev), positions_BT.to(dev)
        if self._head_split_ok is None:
            self._head_split_ok = self._check_head_split(ids_BT[:1], attention_mask_BT[:1])
        if not self._head_split_ok:
            return self.forward_logits(ids_BT, attention_mask_BT)[positions_BT.bool()]
        return self._head_at(ids_BT, attention_mask_BT, positions_BT.bool())

    @property
    def hidden_size(self) -> int:
        """Width D of the last hidden layer: the LM head's input width."""
        return int(self.base_model().get_output_embeddings().weight.shape[1])

    def forward_hidden_at(
        self, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, positions_BT: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(logits_NV, hidden_BTD)` of one teacher-forced pass (with gradients if enabled): the logits
        at the True positions of `positions_BT` (row-major, equal to `forward_logits_at`'s) and the last
        hidden layer (after the final norm, the LM head's input) at every position."""
        dev = self.device
        ids_BT, attention_mask_BT, positions_BT = ids_BT.to(dev), attention_mask_BT.to(dev), positions_BT.to(dev)
        positions_BT = positions_BT.bool()
        if self._head_split_ok is None:
            self._head_split_ok = self._check_head_split(ids_BT[:1], attention_mask_BT[:1])
        if self._head_split_ok:
            base = self.base_model()
            hidden_BTD = base.get_decoder()(
                input_ids=ids_BT, attention_mask=attention_mask_BT, position_ids=_position_ids(attention_mask_BT)
            ).last_hidden_state
            return base.get_output_embeddings()(hidden_BTD[positions_BT]), hidden_BTD
        out = self.model(input_ids=ids_BT, attention_mask=attention_mask_BT,
                         position_ids=_position_ids(attention_mask_BT), output_hidden_states=True)  # fmt: skip
        return out.logits[positions_BT], out.hidden_states[-1]

    def _head_at(self, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, positions_BT: torch.Tensor) -> torch.Tensor:
        base = self.base_model()
        out = base.get_decoder()(
            input_ids=ids_BT, attention_mask=attention_mask_BT, position_ids=_position_ids(attention_mask_BT)
        )
        return base.get_output_embeddings()(out.last_hidden_state[positions_BT])

    def _check_head_split(self, ids_1T: torch.Tensor, attention_mask_1T: torch.Tensor) -> bool:
        base = self.base_model()
        if not callable(getattr(base, "get_decoder", None)) or base.get_output_embeddings() is None:
            return False
        pos_1T = attention_mask_1T > 0
        was_training = self.model.training
        self.model.eval()  # dropout would make the two passes differ
        try:
            with torch.no_grad():
                split_NV = self._head_at(ids_1T, attention_mask_1T, pos_1T).float()
                full_NV = self.forward_logits(ids_1T, attention_mask_1T)[pos_1T].float()
        except (AttributeError, TypeError, ValueError, RuntimeError) as e:
            log.warning("decoder-then-LM-head pass failed (%s); computing full logits instead", e)
            return False
        finally:
            self.model.train(was_training)
        tol = 1e-3 if split_NV.dtype == torch.float32 and next(base.parameters()).dtype == torch.float32 else 5e-2
        ok = split_NV.shape == full_NV.shape and bool(torch.allclose(split_NV, full_NV, atol=tol, rtol=tol))
        if not ok:
            log.warning(
                "%s: decoder-then-LM-head logits differ from the model's own (logit post-processing?); "
                "computing full logits instead", type(base).__name__
            )
        return ok

    def logprobs(
        self,
        ids_BT: torch.Tensor,
        attention_mask_BT: torch.Tensor,
        temperature: float = 1.0,
        grad: bool = False,
        mask_BT: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Log-probability `[B, T]` (float32) of each token given its prefix (0 at the first real
        token and at padding). With `grad=False` rows go in chunks of at most `max_batch_size` whose
        logits fit in `logits_budget_bytes`. `mask_BT` (the tokens a loss reads) computes the LM head
        only there (`forward_logits_at`); the result is then 0 off the mask."""
        if mask_BT is not None:
            return self._masked_logprobs(ids_BT, attention_mask_BT, mask_BT, temperature, grad)
        if grad:
            logits_BTV = self.forward_logits(ids_BT, attention_mask_BT)
            return token_logprobs(
                logits_BTV, ids_BT.to(logits_BTV.device), attention_mask_BT.to(logits_BTV.device), temperature
            )
        chunks = []
        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        rows = max(
            1, min(self.max_batch_size, self.logits_budget_bytes // (8 * vocab * max(1, ids_BT.shape[1])))
        )
        with torch.no_grad(), self._eval_mode():
            for start in range(0, ids_BT.shape[0], rows):
                ids_bT = ids_BT[start : start + rows].to(self.device)
                mask_bT = attention_mask_BT[start : start + rows].to(self.device)
                logits_bTV = self.forward_logits(ids_bT, mask_bT)
                chunks.append(token_logprobs(logits_bTV, ids_bT, mask_bT, temperature))
        return torch.cat(chunks, dim=0)

    def _masked_logprobs(
        self, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, mask_BT: torch.Tensor, temperature: float,
        grad: bool,
    ) -> torch.Tensor:  # fmt: skip
        if grad:  # one pass, as the full-logits grad path
            return masked_logprobs(self, ids_BT, attention_mask_BT, mask_BT, temperature)[0]
        rows = max(1, self.max_batch_size)
        chunks = []
        with torch.no_grad(), self._eval_mode():
            for start in range(0, ids_BT.shape[0], rows):
                part = slice(start, start + rows)
                chunks.append(masked_logprobs(self, ids_BT[part], attention_mask_BT[part], mask_BT[part], temperature)[0])
        return torch.cat(chunks, dim=0)

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    # ----------------------------------------------------------------- generation
    def generate(self, contexts: list[Context], sampling: Sampling) -> list[Generation]:
        """Sample one continuation per context, batched (longest prompts first) with a KV cache."""
        if not contexts:
            return []
        prompts = [self._prompt_ids(c) for c in contexts]
        gen = self._generator(sampling.seed)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[Generation | None] = [None] * len(prompts)
        with torch.no_grad(), self._eval_mode():
            for start in range(0, len(order), self.max_batch_size):
                idx = order[start : start + self.max_batch_size]
                for i, g in zip(idx, self._generate_batch([prompts[i] for i in idx], sampling, gen)):
                    results[i] = g
        return [g for g in results if g is not None]

    def _prompt_ids(self, ctx: Context) -> list[int]:
        if ctx.ids:
            return [int(i) for i in ctx.ids]
        if ctx.messages:
            ids = self.tokenizer.apply_chat_template(
                ctx.messages, tokenize=True, add_generation_prompt=True, return_dict=False
            )
            return [int(i) for i in ids]
        raise ValueError("Context has neither ids nor messages: the Collector must fill at least one")

    def _generator(self, seed: int | None) -> torch.Generator:
        dev = self.device
        if seed is not None:
            return torch.Generator(device=dev).manual_seed(int(seed))
        if self._gen is None or self._gen.device != dev:
            self._gen = torch.Generator(device=dev).manual_seed(self.seed)
        return self._gen

    def _token_pieces(self) -> list[str]:
        if self._pieces is None:
            n = len(self.tokenizer)
            fast = getattr(self.tokenizer, "backend_tokenizer", None)  # one Rust call instead of n
            if fast is not None and hasattr(fast, "decode_batch"):
                self._pieces = list(fast.decode_batch([[i] for i in range(n)], skip_special_tokens=False))
            else:
                self._pieces = [self.tokenizer.decode([i], skip_special_tokens=False) for i in range(n)]
        return self._pieces

    def _stop_candidates(self, stops: tuple[str, ...]) -> list[bool]:
        """Per vocab id: could this token complete one of `stops`? (It holds a stop string's last
        character, or undecodable bytes.) Only such tokens trigger the exact text check."""
        if stops not in self._could_end:
            lasts = {s[-1] for s in stops}
            self._could_end[stops] = [
                (not p) or "\ufffd" in p or any(c in p for c in lasts) for p in self._token_pieces()
            ]
        return self._could_end[stops]

    def _has_stop(self, ids: list[int], stops: tuple[str, ...]) -> bool:
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        return any(s in text for s in stops)

    def _sample(
        self, logits_BV: torch.Tensor, sampling: Sampling, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits_BV = logits_BV.float()
        if sampling.temperature <= 0:
            tok_B = logits_BV.argmax(-1)
            logp_BV = torch.log_softmax(logits_BV, dim=-1)
        else:
            scaled_BV = logits_BV / sampling.temperature
            logp_BV = torch.log_softmax(scaled_BV, dim=-1)
            if sampling.top_k > 0 or sampling.top_p < 1.0:
                probs_BV = filter_logits(scaled_BV, sampling.top_k, sampling.top_p).softmax(-1)
            else:
                probs_BV = logp_BV.exp()
            tok_B = sample_categorical(probs_BV, gen)
        return tok_B, logp_BV.gather(-1, tok_B[:, None]).squeeze(-1)

    def _forward_step(
        self, ids_BL: torch.Tensor, mask_BL: torch.Tensor, pos_BL: torch.Tensor, cache: Any
    ) -> Any:
        kw = {self._cache_kw: cache} if cache is not None else {}
        return self.model(
            input_ids=ids_BL,
            attention_mask=mask_BL,
            position_ids=pos_BL,
            use_cache=True,
            logits_to_keep=1,
            **kw,
        )

    def _cache_of(self, out: Any) -> Any:
        cache = getattr(out, self._cache_kw, None)
        if cache is None:
            raise RuntimeError(
                f"{type(self.model).__name__} returned no KV cache; HFPolicy needs a model with use_cache"
            )
        return cache

    def _generate_batch(
        self, prompts: list[list[int]], sampling: Sampling, gen: torch.Generator
    ) -> list[Generation]:
        dev = self.device
        B, L = len(prompts), max(len(p) for p in prompts)
        ids_BL = torch.full((B, L), self.pad_token_id, dtype=torch.long)
        mask_BL = torch.zeros((B, L), dtype=torch.long)
        for b, p in enumerate(prompts):
            ids_BL[b, L - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask_BL[b, L - len(p) :] = 1
        ids_BL, mask_BL = ids_BL.to(dev), mask_BL.to(dev)
        pos_BL = _position_ids(mask_BL)
        stops = tuple(s for s in sampling.stop if s)
        could_end = self._stop_candidates(stops) if stops else []
        tail = 4 * max((len(x) for x in stops), default=0) + 8  # tokens that can hold a stop string
        out_ids: list[list[int]] = [[] for _ in range(B)]
        out_lp: list[list[float]] = [[] for _ in range(B)]
        reason = ["length"] * B
        rows = list(range(B))  # current batch row -> prompt index, -1 once finished (until compaction)
        out = self._forward_step(ids_BL, mask_BL, pos_BL, None)
        cache = self._cache_of(out)
        pos_B1 = pos_BL[:, -1:]
        for step in range(sampling.max_new_tokens):
            tok_B, lp_B = self._sample(out.logits[:, -1, :], sampling, gen)
            n_done = 0
            for j, (tok, lp) in enumerate(zip(tok_B.tolist(), lp_B.tolist())):
                b = rows[j]
                if b < 0:
                    n_done += 1
                    continue
                out_ids[b].append(tok)
                out_lp[b].append(lp)
                if tok in self.eos_token_ids or (
                    stops
                    and (tok >= len(could_end) or could_end[tok])
                    and self._has_stop(out_ids[b][-tail:], stops)
                ):
                    reason[b] = "stop"
                    rows[j] = -1
                    n_done += 1
            if n_done == len(rows) or step + 1 == sampling.max_new_tokens:
                break
            keep = [j for j, b in enumerate(rows) if b >= 0]
            if n_done * 4 >= len(rows):  # drop finished rows from the cache: later steps get cheaper
                keep_t = torch.tensor(keep, device=dev)
                cache.batch_select_indices(keep_t)
                tok_B, mask_BL, pos_B1 = tok_B[keep_t], mask_BL[keep_t], pos_B1[keep_t]
                rows = [rows[j] for j in keep]
            mask_BL = torch.cat([mask_BL, torch.ones_like(mask_BL[:, :1])], dim=1)
            pos_B1 = pos_B1 + 1
            out = self._forward_step(tok_B[:, None], mask_BL, pos_B1, cache)
            cache = self._cache_of(out)
        return [
            Generation(
                tuple(ids), tuple(lps), self.tokenizer.decode(ids, skip_special_tokens=True), reason[b]
            )
            for b, (ids, lps) in enumerate(zip(out_ids, out_lp))
        ]
