"""Turns and episodes: the rollout format every layer shares.

Both are frozen dataclasses. Token sequences are tuples, so an Episode can be shared between the
Collector, the RolloutStore, packing and the viewer without defensive copies. Dict fields
(`info`, `outcome`, `probe`, `meta`) must hold JSON-native values (str, int, float, bool, None,
lists, dicts with str keys): that is what makes the JSON round trip lossless.
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "EXCLUDED",
    "MC_ROLLOUT",
    "Episode",
    "TaskSpec",
    "Turn",
    "episode_metrics",
    "episode_success",
    "excluded",
    "mark_excluded_groups",
    "nonfinite_reward",
    "split_for_training",
    "zero_advantage_view",
]


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


# ---------------------------------------------------------------------- episode helpers (read by trainers,
# evaluation and benchmarks; they live here, beside the data they read)

MC_ROLLOUT = "mc_rollout"
"""`Episode.meta` key of branch rollouts kept only for Monte-Carlo values (not trained on)."""
EXCLUDED = "train_excluded"
"""`Episode.meta` key: why an episode's group is left out of training ("nonfinite_reward",
"generation_error"; the Collector sets it, and `mark_excluded_groups` checks rewards itself)."""


def episode_success(ep: Episode) -> float:
    """`outcome["success"]` when the env reports it, else 1.0 for a positive return."""
    if "success" in ep.outcome:
        return float(ep.outcome["success"])
    return 1.0 if ep.total_reward > 0 else 0.0


def nonfinite_reward(ep: Episode) -> bool:
    """True when a turn reward, a numeric outcome entry or the greedy-baseline return is NaN or inf."""
    if any(not math.isfinite(float(t.reward)) for t in ep.turns):
        return True
    values = [*ep.outcome.values(), ep.meta.get("greedy_return", 0.0)]
    return any(isinstance(v, (int, float)) and not math.isfinite(float(v)) for v in values)


def excluded(ep: Episode) -> bool:
    """Whether the episode's group is left out of training (`meta["train_excluded"]`)."""
    return bool(ep.meta.get(EXCLUDED))


def mark_excluded_groups(episodes: Sequence[Episode]) -> list[Episode]:
    """Set `meta["train_excluded"]` on every episode of a group (same `group_id`) that holds an
    excluded episode or one with a non-finite reward (METHODS.md 1.9): the whole group is dropped,
    since its baseline is poisoned. The reason is the Collector's, else "nonfinite_reward"."""
    reason: dict[str, str] = {}
    for e in episodes:
        why = e.meta.get(EXCLUDED) or ("nonfinite_reward" if nonfinite_reward(e) else None)
        if why:
            reason.setdefault(e.group_id, str(why))
    if not reason:
        return list(episodes)
    return [
        dataclasses.replace(e, meta={**e.meta, EXCLUDED: e.meta.get(EXCLUDED) or reason[e.group_id]})
        if e.group_id in reason else e
        for e in episodes
    ]  # fmt: skip


def zero_advantage_view(ep: Episode) -> Episode:
    """What a task sampler sees of a dropped group's episode: every reward and outcome 0, so the
    group counts as a zero-advantage group (all-equal returns)."""
    turns = tuple(dataclasses.replace(t, reward=0.0) for t in ep.turns)
    outcome = {k: 0.0 if isinstance(v, (int, float)) else v for k, v in ep.outcome.items()}
    return dataclasses.replace(ep, turns=turns, outcome=outcome)


def split_for_training(episodes: Sequence[Episode]) -> tuple[list[Episode], list[Episode], dict[str, float]]:
    """(trained episodes, Monte-Carlo-only rollouts, drop metrics): groups marked `train_excluded`
    leave both lists and are counted per reason as `dropped_groups_<reason>` and `dropped_groups`."""
    marked = mark_excluded_groups(episodes)
    reasons: dict[str, str] = {e.group_id: str(e.meta[EXCLUDED]) for e in marked if excluded(e)}
    metrics = {"dropped_groups": float(len(reasons)), "dropped_groups_nonfinite": 0.0,
               "dropped_groups_generation_error": 0.0}  # fmt: skip
    for why in reasons.values():
        key = "dropped_groups_nonfinite" if why == "nonfinite_reward" else f"dropped_groups_{why}"
        metrics[key] = metrics.get(key, 0.0) + 1.0
    kept = [e for e in marked if not excluded(e)]
    trained = [e for e in kept if not e.meta.get(MC_ROLLOUT)]
    rollouts = [e for e in kept if e.meta.get(MC_ROLLOUT)]
    return trained, rollouts, metrics


def episode_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """Means over `episodes` of reward, success, turns, invalid actions and truncations, with counts
    of episodes, backend and internal errors and action tokens ({} for no episodes)."""
    if not episodes:
        return {}
    n = len(episodes)
    return {
        "reward": sum(e.total_reward for e in episodes) / n,
        "success": sum(episode_success(e) for e in episodes) / n,
        "turns": sum(e.num_turns for e in episodes) / n,
        "invalid_frac": sum(t.invalid for e in episodes for t in e.turns) / max(sum(e.num_turns for e in episodes), 1),
        "episodes": float(n),
        "collector_truncated": sum(bool(e.outcome.get("collector_truncated")) for e in episodes) / n,
        "backend_errors": float(sum("backend_error" in t.info for e in episodes for t in e.turns)),
        "internal_errors": float(sum("internal_error" in t.info for e in episodes for t in e.turns)),
        "action_tokens": float(sum(len(t.action_ids) for e in episodes for t in e.turns)),
    }
