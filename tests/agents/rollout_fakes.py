"""Shared fakes for the Collector tests (loaded by path: tests run with --import-mode=importlib).

* `TorchBytePolicy`: a tiny trainable bigram language model over the ByteTokenizer vocabulary with
  `generate` (seeded sampling, stop strings, max_new_tokens) and `logprobs(ids_BT, attention_mask_BT)`.
* `Recording`: wraps a policy and records every context and generation it saw.
* `FailingPolicy`: 0-token generations from some turn on (`finish_reason="error"` by default).
* small envs: GuessNumber variants with continuation / tool roles, mask spans, a responder, two players,
  a non-finite reward, long observations with a window history.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
from typing import Any

import torch

import creditgym
from creditgym.agents import ByteTokenizer, register_scripted
from creditgym.agents.base import Context, Generation, Sampling
from creditgym.envs import Invalid, Outcome, Parsed, Task, TextEnv

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_custom_env() -> Any:
    name = "creditgym_example_custom_env"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "custom_env.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


custom_env = load_custom_env()
GuessNumberEnv = custom_env.GuessNumberEnv


class TorchBytePolicy:
    """Bigram LM: logits of the next token depend on the current token only; eos biased up."""

    def __init__(self, seed: int = 0, eos_bias: float = 3.0):
        self.tokenizer = ByteTokenizer()
        V = self.tokenizer.vocab_size
        g = torch.Generator().manual_seed(seed)
        self.model = torch.nn.Embedding(V, V)
        with torch.no_grad():
            self.model.weight.copy_(torch.randn(V, V, generator=g))
            self.model.weight[:, self.tokenizer.im_end_id] += eos_bias
            self.model.weight[:, 256:] -= 4.0
            self.model.weight[:, self.tokenizer.im_end_id] += 4.0

    def forward_logits(self, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor) -> torch.Tensor:
        return self.model(ids_BT)

    def logprobs(self, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor, temperature: float = 1.0, grad: bool = False) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            logits = self.forward_logits(ids_BT, attention_mask_BT)[:, :-1] / max(temperature, 1e-8)
            lp = torch.log_softmax(logits, -1).gather(-1, ids_BT[:, 1:, None])[..., 0]
            return torch.cat([torch.zeros_like(lp[:, :1]), lp], 1) * attention_mask_BT

    def generate(self, contexts: list[Context], sampling: Sampling) -> list[Generation]:
        g = torch.Generator().manual_seed(int(sampling.seed or 0))
        out = []
        for ctx in contexts:
            last = ctx.ids[-1]
            ids, lps = [], []
            reason = "length"
            for _ in range(sampling.max_new_tokens):
                logits = self.model.weight[last].detach()
                temp = sampling.temperature if sampling.temperature > 0 else 1.0
                lp = torch.log_softmax(logits / temp, -1)
                tok = int(lp.argmax()) if sampling.temperature == 0 else int(torch.multinomial(lp.exp(), 1, generator=g))
                ids.append(tok)
                lps.append(float(lp[tok]))
                last = tok
                if tok == self.tokenizer.im_end_id:
                    reason = "stop"
                    break
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                if any(text.endswith(s) for s in sampling.stop):
                    reason = "stop"
                    break
            out.append(Generation(tuple(ids), tuple(lps), self.tokenizer.decode(ids, skip_special_tokens=True), reason))
        return out


class Recording:
    """Wraps a policy; records (context ids, generation, sampling) of every generate call."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.calls: list[tuple[list[int], Generation, Sampling, Context]] = []

    def generate(self, contexts: list[Context], sampling: Sampling) -> list[Generation]:
        gens = self.inner.generate(contexts, sampling)
        for c, g in zip(contexts, gens):
            self.calls.append((list(c.ids), g, sampling, c))
        return gens

    def logprobs(self, *a: Any, **k: Any) -> torch.Tensor:
        return self.inner.logprobs(*a, **k)


class ContinuationGuessEnv(GuessNumberEnv):
    metadata = {**GuessNumberEnv.metadata, "obs_role": "continuation", "stop": ("</guess>",)}

    def _apply(self, parsed: Parsed) -> Outcome:
        out = super()._apply(parsed)
        return Outcome(f"\n<information>{out.obs}</information>\n", out.reward, out.terminated, out.info)


class ToolGuessEnv(GuessNumberEnv):
    """Each guess is a 'tool call'; the step reports one tool result per guess in the action."""

    metadata = {**GuessNumberEnv.metadata, "obs_role": "tool"}

    def _apply(self, parsed: Parsed) -> Outcome:
        out = super()._apply(parsed)
        guesses = re.findall(r"<guess>\s*(-?\d+)", parsed.raw)
        results = [{"name": "compare", "ok": True, "result": f"{g} checked"} for g in guesses]
        return Outcome(out.obs, out.reward, out.terminated, {**out.info, "tool_results": results})


class MaskGuessEnv(GuessNumberEnv):
    """Reports `mask_spans` = the digits inside <guess>...</guess> of the action."""

    def _apply(self, parsed: Parsed) -> Outcome:
        out = super()._apply(parsed)
        m = re.search(r"<guess>\s*(-?\d+)", parsed.raw)
        spans = [[m.start(1), m.end(1)]] if m else []
        return Outcome(out.obs, out.reward, out.terminated, {**out.info, "mask_spans": spans})


class ResponderGuessEnv(GuessNumberEnv):
    """Asks a responder for a hint each step (like SelfSearch responder mode)."""

    metadata = {**GuessNumberEnv.metadata, "requires_responder": True}

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.responder = None
        self.training_step = -1

    def set_responder(self, fn: Any) -> None:
        self.responder = fn

    def _apply(self, parsed: Parsed) -> Outcome:
        out = super()._apply(parsed)
        hint = self.responder([type("Req", (), {"prompt": f"hint for {parsed.args['n']}"})()])[0] if self.responder else "none"
        return Outcome(out.obs + f" hint={len(hint)} step={self.training_step}", out.reward, out.terminated, out.info)


class DuelEnv(TextEnv):
    """Two players alternate naming numbers; the attacker wins if it names 7 before max_turns."""

    metadata = {**TextEnv.metadata, "obs_role": "user"}

    def __init__(self, max_turns: int = 4, **kw: Any):
        super().__init__(max_turns=max_turns, **kw)

    def _new_task(self, rng: Any, options: dict) -> Task:
        return Task(f"duel/{self.split}/{int(rng.integers(0, 5))}", self.split)

    def _first_obs(self) -> str:
        return "attacker: name a number"

    def _parse(self, action: str) -> Parsed | Invalid:
        return Parsed("say", {"text": action}, action)

    def _apply(self, parsed: Parsed) -> Outcome:
        if self.turn % 2 == 0 and "7" in parsed.raw:
            self._winner = "attacker"
            return Outcome("attacker won", 0.1, True)
        nxt = "defender" if self.turn % 2 == 0 else "attacker"
        return Outcome(f"{nxt}: the other said {parsed.raw[:20]!r}", 0.1)

    def _state_key(self) -> str:
        return f"duel|t={self.turn}"

    def _final_components(self) -> dict[str, float]:
        return {"success": float(getattr(self, "_winner", None) == "attacker")}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        self._winner = None
        obs, info = super().reset(seed=seed, options=options)
        return obs, {**info, "role": "attacker"}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        obs, r, term, trunc, info = super().step(action)
        info["role"] = "attacker" if self.turn % 2 == 0 else "defender"
        if term or trunc:
            ra = 1.0 if self._winner == "attacker" else -1.0
            info["final_rewards"] = {"attacker": ra, "defender": -ra}
            info["reward_components_by_role"] = {
                "attacker": {"success": float(ra > 0)}, "defender": {"success": float(ra < 0)}}
        return obs, r, term, trunc, info


class FailingPolicy:
    """Wraps a policy; from turn `fail_at` on, returns 0-token generations with `finish_reason`
    (`"error"` is what `OpenAIPolicy(on_error="empty")` returns after a failed request)."""

    def __init__(self, inner: Any, fail_at: int = 1, finish_reason: str = "error"):
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.fail_at = fail_at
        self.finish_reason = finish_reason

    def generate(self, contexts: list[Context], sampling: Sampling) -> list[Generation]:
        gens = self.inner.generate(contexts, sampling)
        return [
            Generation((), (), "", self.finish_reason) if len(c.action_texts) >= self.fail_at else g
            for c, g in zip(contexts, gens)
        ]


class NanRewardGuessEnv(GuessNumberEnv):
    """Returns `bad_reward` (NaN by default) as the step reward of the second guess."""

    def __init__(self, bad_reward: float = float("nan"), **kw: Any):
        super().__init__(**kw)
        self.bad_reward = bad_reward

    def _apply(self, parsed: Parsed) -> Outcome:
        out = super()._apply(parsed)
        reward = self.bad_reward if self.turn == 1 else out.reward
        return Outcome(out.obs, reward, out.terminated, out.info)


class WindowGuessEnv(GuessNumberEnv):
    """GuessNumber whose observations carry `pad` filler characters and whose default history is a
    window of the last action (like Device)."""

    metadata = {**GuessNumberEnv.metadata, "history": {"mode": "window", "k": 1}}

    def __init__(self, pad: int = 0, **kw: Any):
        super().__init__(**kw)
        self.pad = pad

    def _first_obs(self) -> str:
        return super()._first_obs() + "." * self.pad

    def _apply(self, parsed: Parsed) -> Outcome:
        out = super()._apply(parsed)
        return Outcome(out.obs + "~" * self.pad, out.reward, out.terminated, out.info)


for _id, _cls in [
    ("test/NanGuess-v0", NanRewardGuessEnv),
    ("test/WindowGuess-v0", WindowGuessEnv),
    ("test/ContinuationGuess-v0", ContinuationGuessEnv),
    ("test/ToolGuess-v0", ToolGuessEnv),
    ("test/MaskGuess-v0", MaskGuessEnv),
    ("test/ResponderGuess-v0", ResponderGuessEnv),
    ("test/Duel-v0", DuelEnv),
]:
    creditgym.register(_id, _cls)
    if _id != "test/Duel-v0":
        register_scripted(_id, expert=custom_env.bisect_expert, random=custom_env.random_guess)
