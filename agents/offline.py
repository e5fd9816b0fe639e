"""Offline helpers: Monte-Carlo values from branch rollouts, and expert / SFT datasets.

`mc_values(episodes, rollouts)` gives `values_BK` for `spo` / `vineppo` (CREDIT.md 7): the value of
the state before turn k of episode b is the mean discounted return-to-go from turn k of the rollouts
that pass through that state, i.e. share b's action prefix `a_0..a_{k-1}` (VinePPO, arXiv
2410.01679; SPO, arXiv 2505.23564). `Collector.branch(episodes, "all", n)` makes such rollouts by
replay; the group's other episodes are rollouts from the start state (k = 0).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from creditgym.agents.rollout import Collector
from creditgym.agents.scripted import ScriptedPolicy
from creditgym.store import RolloutStore
from creditgym.token_batch import prefix_node_ids
from creditgym.trajectory import Episode

__all__ = ["expert_episodes", "load_episodes", "mc_values", "return_to_go", "sft_examples"]

log = logging.getLogger(__name__)


def return_to_go(rewards: Sequence[float], gamma: float = 1.0) -> list[float]:
    """`RTG[k] = sum_{j >= k} gamma^(j-k) r_j` (CREDIT.md 1.2)."""
    out = [0.0] * len(rewards)
    acc = 0.0
    for k in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[k]) + gamma * acc
        out[k] = acc
    return out


def _nodes(ep: Episode) -> tuple[int, ...]:
    if ep.node_ids is not None:
        return ep.node_ids
    return prefix_node_ids(f"{ep.group_id}\x00{ep.role}", [t.action_ids for t in ep.turns])


def mc_values(
    episodes: Sequence[Episode],
    rollouts: Sequence[Episode] = (),
    gamma: float = 1.0,
    exclude_self: bool = True,
    num_slots: int | None = None,
) -> torch.Tensor:
    """Monte-Carlo values `[B, K]` for `episodes` (rows in order), packed like `CreditBatch.from_episodes`.

    `values[b, k]` = mean of `RTG_gamma` from turn k over every episode of `episodes` + `rollouts`
    with the same `(group_id, role)` and the same action prefix before turn k (prefix-tree node ids,
    CREDIT.md 6.1); with `exclude_self` (default) episode b's own return is left out, so its
    advantage compares it with independent rollouts, falling back to its own return-to-go when no
    other rollout passes through that state. K defaults to `max_b(n_b + truncated_b)`; the bootstrap
    slot after a truncated episode's last turn is 0 (branch rollouts obey the same budget, so MC
    values already price truncation; CREDIT.md 1.3). Padding is 0.
    """
    pool: dict[str, Episode] = {}
    for ep in [*episodes, *rollouts]:
        pool.setdefault(ep.episode_id, ep)
    # state (group key, node of the prefix before turn k, or -1 at the root) -> [(episode id, RTG_k)]
    through: dict[tuple[str, int], list[tuple[str, float]]] = {}
    for ep in pool.values():
        key = f"{ep.group_id}\x00{ep.role}"
        nodes = _nodes(ep)
        rtg = return_to_go([t.reward for t in ep.turns], gamma)
        for k in range(ep.num_turns):
            through.setdefault((key, nodes[k - 1] if k else -1), []).append((ep.episode_id, rtg[k]))
    K = num_slots if num_slots is not None else max(1, max(ep.num_turns + int(ep.truncated) for ep in episodes))
    values_BK = torch.zeros((len(episodes), K), dtype=torch.float32)
    n_fallback = 0
    for b, ep in enumerate(episodes):
        if ep.num_turns > K:
            raise ValueError(f"mc_values: episode {b} has {ep.num_turns} turns but num_slots={K}")
        key = f"{ep.group_id}\x00{ep.role}"
        nodes = _nodes(ep)
        own = return_to_go([t.reward for t in ep.turns], gamma)
        for k in range(ep.num_turns):
            entries = through[(key, nodes[k - 1] if k else -1)]
            vals = [r for eid, r in entries if not (exclude_self and eid == ep.episode_id)]
            if not vals:
                vals = [own[k]]
                n_fallback += 1
            values_BK[b, k] = sum(vals) / len(vals)
    if n_fallback:
        log.info("mc_values: %d state(s) had no other rollout; used the episode's own return", n_fallback)
    return values_BK


def expert_episodes(
    env_id: str,
    num_groups: int,
    seed: int = 0,
    tokenizer: Any = None,
    group_size: int = 1,
    epsilon: float = 0.0,
    env_kwargs: Mapping[str, Any] | None = None,
    store: RolloutStore | str | None = None,
    role: str | None = None,
) -> list[Episode]:
    """Episodes of the family's scripted expert (`ScriptedPolicy.for_env`), tokenized with `tokenizer`
    (the student's, for SFT warm starts; the byte-level one when None), optionally streamed to a store."""
    policy = ScriptedPolicy.for_env(env_id, tokenizer=tokenizer, role=role, epsilon=epsilon, seed=seed)
    col = Collector(policy, env_id, group_size=group_size, env_kwargs=env_kwargs, store=store)
    try:
        return col.collect(num_groups, seed)
    finally:
        col.close()


def sft_examples(
    episodes: Sequence[Episode], min_outcome: float | None = None, outcome_key: str = "success"
) -> list[tuple[list[int], list[int]]]:
    """`(ids, loss_mask)` per episode (observation tokens 0, action tokens their `action_loss_mask`),
    keeping only episodes with `outcome[outcome_key] >= min_outcome` when given."""
    out = []
    for ep in episodes:
        if min_outcome is not None and float(ep.outcome.get(outcome_key, float("-inf"))) < min_outcome:
            continue
        ids: list[int] = []
        mask: list[int] = []
        for t in ep.turns:
            ids += t.obs_ids
            mask += [0] * len(t.obs_ids)
            ids += t.action_ids
            mask += list(t.action_loss_mask or ())
        out.append((ids, mask))
    return out


def load_episodes(path: str | os.PathLike[str]) -> list[Episode]:
    """All episodes of a RolloutStore file."""
    return RolloutStore(path).read()
