"""Scripted policies and the plain play loop.

`ScriptedPolicy.for_env(env_id)` / `RandomPolicy.for_env(env_id)` play the expert and random baseline
that the env id was registered with (`creditgym.register(..., expert=, random=)`; the built-in families
register theirs in `envs/<family>/`), writing actions as text through the Policy protocol.

`play_episode` / `play_episodes` / `success_rate` run such action functions (`ActionFn`: `(history,
rng) -> str`, or any lambda) against an env in the plain Gymnasium loop: reset, act, step, append the
action and the next observation to `ctx.action_texts` / `ctx.obs_texts`, until the episode terminates
or truncates. For two-player envs pass a mapping role -> function: the mover is read from
`info["role"]` each turn and every role keeps its own context of the observations it was shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
import torch

import creditgym  # noqa: F401  (registers the creditgym/ env ids for gymnasium.make)
from creditgym.agents.base import Context, Generation, Sampling
from creditgym.agents.byte_tokenizer import ByteTokenizer
from creditgym.registry import ActionFn, scripted_functions

__all__ = ["PlayResult", "RandomPolicy", "ScriptedPolicy", "play_episode", "play_episodes", "success_rate"]


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


@dataclass(frozen=True)
class PlayResult:
    """One finished (or cut) episode.

    `info`: the info of the last step; `rewards`: the step rewards in order; `ctx`: the context of the
    (first) mover, with the reset observation first and the last observation appended after the last
    action in one-player play; `contexts`: role -> context (two-player play; one entry otherwise);
    `roles`: who acted at each turn; `turns`: the number of env steps taken.
    """

    info: dict[str, Any]
    rewards: list[float]
    ctx: Context
    turns: int
    terminated: bool
    truncated: bool
    contexts: dict[str, Context] = field(default_factory=dict)
    roles: list[str] = field(default_factory=list)

    @property
    def components(self) -> dict[str, float]:
        """`info["reward_components"]` of the last step."""
        return self.info["reward_components"]

    @property
    def success(self) -> float:
        return float(self.components["success"])

    def totals(self) -> dict[str, float]:
        """Each role's summed step rewards plus its `info["final_rewards"]` (two-player envs)."""
        out: dict[str, float] = {r: 0.0 for r in self.contexts}
        for role, r in zip(self.roles, self.rewards):
            out[role] = out.get(role, 0.0) + r
        for role, r in self.info.get("final_rewards", {}).items():
            out[role] = out.get(role, 0.0) + r
        return out


def play_episode(
    env: gymnasium.Env,
    action_fn: ActionFn | Mapping[str, ActionFn],
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    rng: np.random.Generator | None = None,
    role: str | None = None,
    max_turns: int | None = None,
) -> PlayResult:
    """Reset `env` with `seed`/`options` and play `action_fn` until the episode ends.

    `rng` defaults to `np.random.default_rng(seed)` (0 when `seed` is None); pass one generator to
    share it across episodes. `role` sets the context role of one-player play. `action_fn` may be a
    mapping role -> function for two-player envs (the mover is `info["role"]`). `max_turns` stops
    early after that many steps (the result then has `terminated = truncated = False`).
    """
    if rng is None:
        rng = np.random.default_rng(0 if seed is None else seed)
    obs, info = env.reset(seed=seed, options=options)
    two_player = isinstance(action_fn, Mapping)
    if isinstance(action_fn, Mapping):
        fns = dict(action_fn)
        contexts = {r: Context(role=r) for r in fns}
        first = contexts[info["role"]]
    else:
        first = Context(obs_texts=[obs]) if role is None else Context(obs_texts=[obs], role=role)
        fns, contexts = {first.role: action_fn}, {first.role: first}
    rewards: list[float] = []
    roles: list[str] = []
    terminated = truncated = False
    while not (terminated or truncated) and (max_turns is None or len(rewards) < max_turns):
        mover = info["role"] if two_player else first.role
        ctx = contexts[mover]
        if two_player:  # each role sees only the observations addressed to it, just before it acts
            ctx.obs_texts.append(obs)
        action = fns[mover](ctx, rng)
        ctx.action_texts.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        if not two_player:
            ctx.obs_texts.append(obs)
        rewards.append(float(reward))
        roles.append(mover)
    return PlayResult(info, rewards, first, len(rewards), bool(terminated), bool(truncated), contexts, roles)


def play_episodes(
    env: gymnasium.Env,
    action_fn: ActionFn | Mapping[str, ActionFn],
    seeds: Iterable[int],
    options: dict[str, Any] | None = None,
    rng: np.random.Generator | None = None,
    role: str | None = None,
) -> list[PlayResult]:
    """`play_episode` for each seed; `rng=None` seeds a fresh generator per episode, a generator is shared."""
    return [play_episode(env, action_fn, s, options=options, rng=rng, role=role) for s in seeds]


def success_rate(
    env_id: str,
    which: str = "expert",
    seeds: Iterable[int] = range(50),
    split: str | None = "test",
    env_kwargs: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    role: str | None = None,
    rng: np.random.Generator | None = None,
) -> float:
    """Mean `reward_components["success"]` of the registered expert or random function of `env_id`.

    The env is `gymnasium.make(env_id, split=split, **env_kwargs)` (no `split` argument when None);
    `rng` as in `play_episodes`.
    """
    if which not in ("expert", "random"):
        raise ValueError(f"which must be 'expert' or 'random', got {which!r}")
    expert, random = scripted_functions(env_id, role)
    kwargs = dict(env_kwargs or {})
    if split is not None:
        kwargs["split"] = split
    env = gymnasium.make(env_id, **kwargs)
    try:
        results = play_episodes(env, expert if which == "expert" else random, seeds, options, rng, role)
    finally:
        env.close()
    if not results:
        raise ValueError("success_rate needs at least one seed")
    return float(np.mean([r.success for r in results]))
