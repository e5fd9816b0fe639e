"""ScriptedPolicy and RandomPolicy: rule-based actions written as text, through the Policy protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from creditgym.agents.base import Context, Generation, Sampling
from creditgym.agents.scripted.tokenizer import ByteTokenizer

__all__ = ["ActionFn", "RandomPolicy", "ScriptedPolicy", "register_scripted", "scripted_functions"]

ActionFn = Callable[[Context, np.random.Generator], str]

# (env id, role or None) -> (expert, random)
_SCRIPTED: dict[tuple[str, str | None], tuple[ActionFn, ActionFn]] = {}


def register_scripted(env_id: str, expert: ActionFn, random: ActionFn, role: str | None = None) -> None:
    """Register the scripted expert and random baseline of `env_id` (and `role`, for two-player envs)."""
    _SCRIPTED[(env_id, role)] = (expert, random)


def scripted_functions(env_id: str, role: str | None = None) -> tuple[ActionFn, ActionFn]:
    """The (expert, random) pair for an env id and role; imports the family module on first use."""
    from creditgym.agents.scripted import load_family

    load_family(env_id)
    for key in ((env_id, role), (env_id, None)):
        if key in _SCRIPTED:
            return _SCRIPTED[key]
    known = sorted({f"{e}" + (f" (role={r})" if r else "") for e, r in _SCRIPTED})
    raise KeyError(
        f"no scripted policy for env {env_id!r}" + (f" and role {role!r}" if role else "")
        + f"; known: {known}. Register one with creditgym.agents.scripted.register_scripted(env_id, expert, random)"
    )


class _TextPolicy:
    """Shared machinery: turn an action function's text into a Generation with the tokenizer's ids."""

    def __init__(self, env_id: str, tokenizer: Any = None, role: str | None = None, seed: int = 0):
        self.env_id = env_id
        self.role = role
        self.tokenizer = tokenizer if tokenizer is not None else ByteTokenizer()
        self._rng = np.random.default_rng(seed)
        self._expert, self._random = scripted_functions(env_id, role)

    def _action(self, ctx: Context) -> str:
        raise NotImplementedError

    def generate(self, contexts: list[Context], sampling: Sampling) -> list[Generation]:
        out = []
        for ctx in contexts:
            text = self._action(ctx)
            ids = list(self.tokenizer.encode(text, add_special_tokens=False))
            stopped = any(text.endswith(s) for s in sampling.stop if s)
            eos = getattr(self.tokenizer, "eos_token_id", None)
            if not stopped and eos is not None:
                ids.append(int(eos))
            if not ids:
                ids = [int(eos)] if eos is not None else list(self.tokenizer.encode(" "))
            out.append(Generation(tuple(ids), (0.0,) * len(ids), text, "stop"))
        return out

    def logprobs(self, ids_BT: Any, attention_mask_BT: Any, temperature: float = 1.0, grad: bool = False) -> Any:
        """Scripted actions are deterministic choices: log-probability 0 for every token."""
        import torch

        return torch.zeros(ids_BT.shape, dtype=torch.float32)


class ScriptedPolicy(_TextPolicy):
    """The family's rule-based expert; with `epsilon > 0` a random well-formed action replaces the
    expert's with that probability (an imperfect expert for warm starts)."""

    def __init__(self, env_id: str, tokenizer: Any = None, role: str | None = None, epsilon: float = 0.0, seed: int = 0):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
        super().__init__(env_id, tokenizer, role, seed)
        self.epsilon = float(epsilon)

    @classmethod
    def for_env(
        cls, env_id: str, tokenizer: Any = None, role: str | None = None, epsilon: float = 0.0, seed: int = 0
    ) -> ScriptedPolicy:
        return cls(env_id, tokenizer=tokenizer, role=role, epsilon=epsilon, seed=seed)

    def _action(self, ctx: Context) -> str:
        if self.epsilon > 0 and self._rng.random() < self.epsilon:
            return self._random(ctx, self._rng)
        return self._expert(ctx, self._rng)


class RandomPolicy(_TextPolicy):
    """Random well-formed actions of the env's grammar, with arguments drawn from the observation."""

    @classmethod
    def for_env(cls, env_id: str, tokenizer: Any = None, role: str | None = None, seed: int = 0) -> RandomPolicy:
        return cls(env_id, tokenizer=tokenizer, role=role, seed=seed)

    def _action(self, ctx: Context) -> str:
        return self._random(ctx, self._rng)
