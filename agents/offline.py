"""Offline helpers: Monte-Carlo values from branch rollouts, expert / SFT datasets, and mixed-quality
offline datasets (`collect_offline`: expert, noisy expert, random and optionally a policy's episodes,
as DigiRL and Digi-Q train on; METHODS.md 6-7).

`mc_values(episodes, rollouts)` gives `values_BK` for `spo` / `vineppo` (CREDIT.md 7): the value of
the state before turn k of episode b is the mean discounted return-to-go from turn k of the rollouts
that pass through that state, i.e. share b's action prefix `a_0..a_{k-1}` (VinePPO, arXiv
2410.01679; SPO, arXiv 2505.23564). `Collector.branch(episodes, "all", n)` makes such rollouts by
replay; the group's other episodes are rollouts from the start state (k = 0).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from creditgym.agents.base import Policy, Sampling
from creditgym.agents.rollout import Collector, derive_seed
from creditgym.agents.scripted import RandomPolicy, ScriptedPolicy
from creditgym.store import RolloutStore
from creditgym.token_batch import prefix_node_ids
from creditgym.trajectory import Episode, episode_success

__all__ = [
    "OFFLINE_SOURCES", "collect_offline", "expert_episodes", "load_episodes", "manifest_path", "mc_values",
    "return_to_go", "sft_examples",
]  # fmt: skip

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


OFFLINE_SOURCES = ("expert", "noisy_expert", "random", "policy")
"""The sources `collect_offline` mixes, in the order it collects them (`Episode.meta["offline"]["source"]`)."""


def manifest_path(store_path: str | os.PathLike[str]) -> Path:
    """The manifest written beside an offline store: `episodes.jsonl` -> `episodes.manifest.json`."""
    p = Path(store_path)
    return p.with_name(p.stem + ".manifest.json")


def collect_offline(
    env_id: str,
    store: RolloutStore | str | os.PathLike[str] | None = None,
    *,
    n_expert: int = 32,
    n_noisy: int = 64,
    n_random: int = 32,
    epsilon: float = 0.5,
    policy: Policy | None = None,
    n_policy: int = 0,
    sampling: Sampling | None = None,
    tokenizer: Any = None,
    env_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> list[Episode]:
    """A mixed-quality offline dataset on `env_id`: `n_expert` episodes of the scripted expert,
    `n_noisy` of the expert taking a random well-formed action with probability `epsilon` (DigiRL's
    offline data, METHODS.md 6: eps 0.5), `n_random` of the random baseline and, with `policy`,
    `n_policy` of that policy (e.g. a warm-started model; `sampling` its decoding settings). Every source plays its own tasks (seeds
    derived from `seed` and the source), one episode per task.

    Each episode's `meta["offline"]` records its source, epsilon and the mix; with `store` the
    episodes are appended to that RolloutStore and a manifest (`manifest_path(store)`: env, kwargs,
    seed, and per source the count, epsilon and success rate) is written beside it. `tokenizer`
    tokenizes the scripted sources' actions (pass the student's; the byte-level one when None).
    """
    counts = {"expert": n_expert, "noisy_expert": n_noisy, "random": n_random, "policy": n_policy if policy else 0}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"collect_offline: episode counts must be >= 0, got {counts}")
    if n_policy > 0 and policy is None:
        raise ValueError("collect_offline: n_policy > 0 needs policy= (the model whose episodes to add)")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"collect_offline: epsilon must lie in [0, 1], got {epsilon}")
    tok = tokenizer if tokenizer is not None else getattr(policy, "tokenizer", None)
    mix = {k: v for k, v in counts.items() if v > 0}
    out: list[Episode] = []
    summary: dict[str, dict[str, float]] = {}
    for i, source in enumerate(OFFLINE_SOURCES):
        n = counts[source]
        if n <= 0:
            continue
        eps_ = epsilon if source == "noisy_expert" else (0.0 if source == "expert" else None)
        src_seed = derive_seed(seed, i)
        actor: Policy
        if source == "random":
            actor = RandomPolicy.for_env(env_id, tokenizer=tok, seed=src_seed)
        elif source == "policy":
            assert policy is not None
            actor = policy
        else:
            actor = ScriptedPolicy.for_env(env_id, tokenizer=tok, epsilon=float(eps_ or 0.0), seed=src_seed)
        col = Collector(actor, env_id, group_size=1, env_kwargs=env_kwargs, sampling=sampling if source == "policy" else None)
        try:
            eps = col.collect(n, src_seed)
        finally:
            col.close()
        tag = {"source": source, "epsilon": eps_, "mix": mix, "seed": int(seed)}
        eps = [dataclasses.replace(e, meta={**e.meta, "offline": tag}) for e in eps]
        summary[source] = {"episodes": float(len(eps)), "epsilon": -1.0 if eps_ is None else float(eps_),
                           "success": sum(episode_success(e) for e in eps) / max(len(eps), 1)}  # fmt: skip
        out += eps
    if store is not None:
        rs = store if isinstance(store, RolloutStore) else RolloutStore(store)
        rs.extend(out)
        manifest = {"env_id": env_id, "env_kwargs": dict(env_kwargs or {}), "seed": int(seed), "mix": mix,
                    "sources": summary, "episodes": len(out)}  # fmt: skip
        manifest_path(rs.path).write_text(json.dumps(manifest, indent=1))
        log.info("collect_offline: wrote %d episodes (%s) to %s", len(out), mix, rs.path)
    return out
