"""Turns and episodes: the rollout format every layer shares.

Both are frozen dataclasses. Token sequences are tuples, so an Episode can be shared between the
Collector, the RolloutStore, packing and the viewer without defensive copies. Dict fields
(`info`, `outcome`, `probe`, `meta`) must hold JSON-native values (str, int, float, bool, None,
lists, dicts with str keys): that is what makes the JSON round trip lossless.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Episode", "TaskSpec", "Turn"]


def _as_int_tuple(xs: Sequence[int] | None) -> tuple[int, ...]:
    return tuple(int(x) for x in xs) if xs is not None else ()


def _as_float_tuple(xs: Sequence[float] | None) -> tuple[float, ...]:
    return tuple(float(x) for x in xs) if xs is not None else ()


@dataclass(frozen=True)
class Turn:
    """One agent action and the observation tokens that preceded it.

    `obs_ids` are the tokens appended to the context before the action (observation rendered by the
    chat template, generation prompt; the whole prompt for the first turn). `action_ids` are the
    sampled tokens, `action_logprobs` their sampling log-probabilities (one per action token, 0.0
    when unknown), `action_loss_mask` one 0/1 per action token (all 1 by default; 0 for sampled
    tokens the loss must skip, e.g. self-written search results). `state_key` is the env state key
    the action was taken from; `reward` is the env's reward for this step; `probe` holds probe scores
    of the context after this turn and the env's reply.
    """

    obs_ids: tuple[int, ...] = ()
    action_ids: tuple[int, ...] = ()
    action_logprobs: tuple[float, ...] | None = None
    action_loss_mask: tuple[int, ...] | None = None
    action_text: str = ""
    obs_text: str = ""
    reward: float = 0.0
    state_key: str = ""
    invalid: bool = False
    probe: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "obs_ids", _as_int_tuple(self.obs_ids))
        set_(self, "action_ids", _as_int_tuple(self.action_ids))
        n = len(self.action_ids)
        lp = _as_float_tuple(self.action_logprobs) if self.action_logprobs is not None else (0.0,) * n
        mask = _as_int_tuple(self.action_loss_mask) if self.action_loss_mask is not None else (1,) * n
        if len(lp) != n:
            raise ValueError(f"Turn: {len(lp)} action_logprobs for {n} action_ids; give one per action token")
        if len(mask) != n:
            raise ValueError(f"Turn: {len(mask)} action_loss_mask entries for {n} action_ids; give one per token")
        if any(m not in (0, 1) for m in mask):
            raise ValueError("Turn: action_loss_mask entries must be 0 or 1")
        set_(self, "action_logprobs", lp)
        set_(self, "action_loss_mask", mask)
        set_(self, "reward", float(self.reward))
        set_(self, "invalid", bool(self.invalid))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Turn:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass(frozen=True)
class Episode:
    """One rollout of one role in one env task.

    `group_id` is a run-unique string shared by the episodes of a GRPO group (same task and seed);
    packing gives every distinct `(group_id, role)` its own baseline group. Exactly one of
    `terminated` / `truncated` is true. `node_ids` (one prefix-tree node id per turn) is set by tree
    rollouts; None means packing derives ids from a digest of the action prefix. `final_obs_text` /
    `final_obs_ids` are the observation after the last step (a critic values a truncated episode's
    last state from them). `meta` keeps the reset `options` under `"options"` so replay is exact.
    `history` is the Collector's history policy (docs/collector.md, "History"): `"full"` (one growing
    conversation: each turn's `obs_ids` are the tokens appended to it) or a per-turn policy
    (`"window:k"`, `"custom"`: each turn's `obs_ids` are the whole prompt that turn was sampled from,
    so packing gives each turn its own training row).
    """

    turns: tuple[Turn, ...] = ()
    episode_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    task_id: str = ""
    group_id: str = "g0"
    seed: int | None = None
    role: str = "agent"
    terminated: bool = True
    truncated: bool = False
    outcome: dict[str, float] = field(default_factory=dict)
    probe0: dict[str, float] = field(default_factory=dict)
    node_ids: tuple[int, ...] | None = None
    final_obs_text: str = ""
    final_obs_ids: tuple[int, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    history: str = "full"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        turns = tuple(t if isinstance(t, Turn) else Turn.from_dict(t) for t in self.turns)
        set_(self, "turns", turns)
        set_(self, "final_obs_ids", _as_int_tuple(self.final_obs_ids))
        set_(self, "terminated", bool(self.terminated))
        set_(self, "truncated", bool(self.truncated))
        set_(self, "history", str(self.history))
        if self.node_ids is not None:
            nodes = _as_int_tuple(self.node_ids)
            if len(nodes) != len(turns):
                raise ValueError(f"Episode: {len(nodes)} node_ids for {len(turns)} turns; give one per turn or None")
            set_(self, "node_ids", nodes)

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    @property
    def per_turn_rows(self) -> bool:
        """True when each turn was sampled from its own prompt (history other than "full")."""
        return self.history != "full"

    @property
    def total_reward(self) -> float:
        return float(sum(t.reward for t in self.turns))

    @property
    def options(self) -> dict[str, Any] | None:
        """The reset options the episode was started with (for exact replay)."""
        return self.meta.get("options")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.name != "turns"}
        d["turns"] = [t.to_dict() for t in self.turns]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Episode:
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["turns"] = tuple(Turn.from_dict(t) for t in d.get("turns", ()))
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, s: str) -> Episode:
        return cls.from_dict(json.loads(s))


@dataclass(frozen=True)
class TaskSpec:
    """What a task sampler hands the Collector for one group.

    `category` is a free label (a difficulty, a task type) used for per-category statistics;
    `env_kwargs` are passed to the env constructor (merged over the Collector's own); `task_id`, when
    set, is passed as `reset(options={"task_id": ...})` so the group plays exactly that task.
    """

    category: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    task_id: str | None = None


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    return v
