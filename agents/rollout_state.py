"""Mutable per-match state of the Collector, and turning a finished match into Episodes."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from creditgym.agents.base import Generation
from creditgym.agents.rollout_chat import ChatRenderer
from creditgym.agents.rollout_history import HistoryPolicy
from creditgym.trajectory import Episode, Turn

__all__ = ["Match", "RoleConv", "StartSpec", "append_assistant", "build_episodes", "played_conv", "prefix_conv"]


@dataclass
class StartSpec:
    """How to start one match: a fresh reset, or (`prefix`) a branch of a recorded episode before
    turn `prefix_turns`. Matches of one `bucket` (a group, or the branches of one episode) finish together."""

    bucket: int
    group_id: str
    member: int
    seed: int | None
    options: dict[str, Any]
    env_kwargs: dict[str, Any]
    greedy: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    prefix: Episode | None = None
    prefix_turns: int = 0
    policies: dict[str, Any] | None = None  # per-match role -> policy override (opponent pools)
    partner: Episode | None = None  # two-player branch: the other role's episode of the same match


@dataclass
class RoleConv:
    """One role's conversation: exact ids, chat messages, raw texts, turns so far, and the observation
    tokens appended since the role's last action (the next turn's `obs_ids`)."""

    role: str
    policy: Any
    renderer: ChatRenderer
    ids: list[int] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    obs_texts: list[str] = field(default_factory=list)
    action_texts: list[str] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    pending_obs_ids: list[int] = field(default_factory=list)
    pending_obs_text: str = ""
    state_key: str = ""
    abstract_state: str | None = None  # the env's info["abstract_state"] (pvd), None when it gives none

    def add_turn(
        self, action_ids: list[int], gen: Generation, mask: list[int] | None, reward: float, invalid: bool,
        info: dict[str, Any],
    ) -> None:
        lp = tuple(float(x) for x in gen.logprobs) if gen.logprobs is not None else None
        if lp is not None and len(lp) != len(action_ids):
            raise ValueError(f"Generation has {len(lp)} logprobs for {len(action_ids)} token ids; give one per token")
        self.turns.append(Turn(
            obs_ids=tuple(self.pending_obs_ids), action_ids=tuple(action_ids), action_logprobs=lp,
            action_loss_mask=tuple(mask) if mask is not None else None, action_text=gen.text,
            obs_text=self.pending_obs_text, reward=reward, state_key=self.state_key, invalid=invalid, info=info,
        ))
        self.pending_obs_ids = []
        self.pending_obs_text = ""


@dataclass
class Match:
    """One env episode in flight (two-player envs: one conversation per role)."""

    spec: StartSpec
    env: Any  # an env_workers.EnvHandle: the env lives in a worker (or in this process)
    env_key: str
    obs_role: str
    stop: tuple[str, ...]
    default_role: str
    convs: dict[str, RoleConv] = field(default_factory=dict)
    acting: str = "agent"
    task_id: str = ""
    gold: tuple[str, ...] = ()
    done: bool = False
    terminated: bool = False
    truncated: bool = False
    collector_truncated: bool = False
    final_info: dict[str, Any] = field(default_factory=dict)
    backend_log: list[Any] = field(default_factory=list)
    history: HistoryPolicy = field(default_factory=HistoryPolicy)
    generation_error: bool = False
    nonfinite_reward: bool = False
    env_error: str = ""  # the env failed and replay on a fresh env could not recover it (env_workers.py)

    def end_collector_truncated(self) -> None:
        self.done, self.truncated, self.terminated, self.collector_truncated = True, True, False, True

    def end_generation_error(self) -> None:
        """The backend returned no action (`finish_reason="error"`): end as a backend failure."""
        self.done, self.truncated, self.terminated, self.generation_error = True, True, False, True

    def end_env_error(self, error: str) -> None:
        """The env failed even on a fresh env: end truncated, the error recorded."""
        self.done, self.truncated, self.terminated, self.env_error = True, True, False, error

    def end_env(self, terminated: bool, info: dict[str, Any]) -> None:
        self.done, self.terminated, self.truncated = True, terminated, not terminated
        self.final_info = info

    def role_rewards(self, conv: RoleConv) -> list[float]:
        """Turn rewards of a role, with the role's final reward (two-player envs) added to its last turn."""
        rewards = [t.reward for t in conv.turns]
        final = self.final_info.get("final_rewards")
        if isinstance(final, dict) and conv.role in final and rewards and len(self.convs) > 1:
            rewards[-1] += float(final[conv.role])
        return rewards

    def role_returns(self) -> dict[str, float]:
        return {role: float(sum(self.role_rewards(c))) for role, c in self.convs.items()}


def build_episodes(m: Match, run_id: str) -> list[Episode]:
    """One Episode per role of a finished match (Episode fields as ARCHITECTURE.md describes)."""
    out = []
    match_id = f"{m.spec.group_id}-m{m.spec.member}"
    for role, conv in m.convs.items():
        rewards = m.role_rewards(conv)
        turns = tuple(
            t if t.reward == r else dataclasses.replace(t, reward=r) for t, r in zip(conv.turns, rewards)
        )
        if m.generation_error:
            outcome = {"success": 0.0, "return": float(sum(rewards)), "generation_error": 1.0}
        elif m.collector_truncated:
            outcome = {"success": 0.0, "return": float(sum(rewards)), "collector_truncated": 1.0}
        elif m.env_error:
            outcome = {"success": 0.0, "return": float(sum(rewards)), "env_error": 1.0}
        else:
            by_role = m.final_info.get("reward_components_by_role")
            comps = by_role.get(role) if isinstance(by_role, dict) and role in by_role else m.final_info.get("reward_components")
            outcome = {str(k): float(v) for k, v in (comps or {}).items()}
            outcome.setdefault("return", float(sum(rewards)))
        meta = {**m.spec.meta, "options": dict(m.spec.options), "match_id": match_id, "member": m.spec.member}
        if m.gold:
            meta["gold"] = list(m.gold)
        if conv.abstract_state is not None:  # the state after the last turn (CreditBatch.abstract_BK1)
            meta["final_abstract_state"] = conv.abstract_state
        if m.backend_log:
            meta["backend_log"] = m.backend_log
        if m.generation_error:  # the trainer drops every group holding such an episode (issue 17)
            meta["train_excluded"] = "generation_error"
        elif m.env_error:
            meta["train_excluded"], meta["env_error"] = "env_error", m.env_error[-2000:]
        elif m.nonfinite_reward or not all(math.isfinite(r) for r in rewards):
            meta["train_excluded"] = "nonfinite_reward"
        out.append(Episode(
            turns=turns, task_id=m.task_id, group_id=m.spec.group_id, seed=m.spec.seed, role=role,
            terminated=m.terminated, truncated=m.truncated, outcome=outcome,
            final_obs_text=conv.pending_obs_text, final_obs_ids=tuple(conv.pending_obs_ids), meta=meta,
            history=m.history.describe(),
        ))
    return out


def append_assistant(messages: list[dict[str, Any]], text: str) -> None:
    """Extend the running assistant message (continuation role) or start one."""
    if messages and messages[-1]["role"] == "assistant":
        messages[-1] = {**messages[-1], "content": messages[-1]["content"] + text}
    else:
        messages.append({"role": "assistant", "content": text})


def prefix_conv(
    ep: Episode, k: int, policy: Any, renderer: ChatRenderer, obs_role: str, history: HistoryPolicy | None = None
) -> RoleConv:
    """The conversation of `ep` just before turn k, rebuilt from its recorded tokens (ids exactly as
    recorded; chat messages rebuilt from the texts, for message-based backends). A per-turn history's
    context is turn k's recorded prompt."""
    conv = RoleConv(role=ep.role, policy=policy, renderer=renderer)
    conv.turns = list(ep.turns[:k])
    conv.obs_texts = [t.obs_text for t in ep.turns[: k + 1]]
    conv.action_texts = [t.action_text for t in ep.turns[:k]]
    conv.pending_obs_ids = list(ep.turns[k].obs_ids)
    conv.pending_obs_text = ep.turns[k].obs_text
    conv.state_key = ep.turns[k].state_key
    conv.abstract_state = ep.turns[k].info.get("abstract_state")
    if history is not None and history.per_turn:
        conv.ids = list(ep.turns[k].obs_ids)
        conv.messages = renderer.with_system(history.messages(conv.obs_texts, conv.action_texts))
        return conv
    conv.ids = [i for t in ep.turns[:k] for i in (*t.obs_ids, *t.action_ids)] + list(ep.turns[k].obs_ids)
    msgs = renderer.first_messages(ep.turns[0].obs_text)
    for j, t in enumerate(ep.turns[:k]):
        nxt = ep.turns[j + 1].obs_text
        if obs_role == "continuation":
            append_assistant(msgs, t.action_text + nxt)
        else:
            msgs.append({"role": "assistant", "content": t.action_text})
            msgs += renderer.observation_messages(nxt, obs_role, {})
    conv.messages = msgs
    return conv


def played_conv(ep: Episode, j: int, rewards: list[float], policy: Any, renderer: ChatRenderer, obs_role: str) -> RoleConv:
    """The conversation of `ep` after its first j turns (actions taken, the next observation not yet
    seen): the other role's side of a two-player branch. `rewards` replace those turns' rewards (a
    recorded last turn holds the match's final reward, which the branch has not earned yet)."""
    conv = RoleConv(role=ep.role, policy=policy, renderer=renderer)
    conv.turns = [t if t.reward == r else dataclasses.replace(t, reward=r) for t, r in zip(ep.turns[:j], rewards)]
    conv.obs_texts = [t.obs_text for t in ep.turns[:j]]
    conv.action_texts = [t.action_text for t in ep.turns[:j]]
    conv.ids = [i for t in ep.turns[:j] for i in (*t.obs_ids, *t.action_ids)]
    msgs = renderer.first_messages(ep.turns[0].obs_text)
    for i, t in enumerate(ep.turns[:j]):
        if i > 0:
            if obs_role == "continuation":
                append_assistant(msgs, t.obs_text)
            else:
                msgs += renderer.observation_messages(t.obs_text, obs_role, {})
        if obs_role == "continuation":
            append_assistant(msgs, t.action_text)
        else:
            msgs.append({"role": "assistant", "content": t.action_text})
    conv.messages = msgs
    return conv
