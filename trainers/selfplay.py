"""Self-play opponent pools: frozen snapshots of the trained roles, drawn as opponents (ENVS.md section 6).

Every `every` updates the trainer freezes a snapshot of each trained role into that role's
`OpponentPool` (the first at update 0, so pools are never empty). Then:

* **both roles trained** (a two-player env, `policies={"attacker": p1, "defender": p2}`): each group
  of a round trains one role (alternating over groups and rounds) against an opponent drawn from the
  *other* role's pool (its latest snapshot with probability `latest_prob`, else uniformly), drawn with
  the pools' own seeded generator; only the learning role's episodes are kept (the snapshot's tokens
  were not sampled by a trained policy), each marked `meta["opponent"] = "defender@12"`;
* **one role trained** with `victim="pool"` (attacker) or `attacker="pool"` (defender) in its env
  kwargs: the env draws its opponent at reset (`OpponentPool.sample(np_random)`) from snapshots of
  the trained policy itself, which answer chat messages as the other role.

The snapshots, their update numbers and the generator are checkpointed (`state_dict`), so a resumed
run draws the same opponents. Snapshots are full frozen copies of the model (with LoRA, of the
wrapped model): memory grows by one model per role per `every` updates (`max_snapshots` caps it).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from creditgym.agents.base import Context, Sampling, TrainablePolicy
from creditgym.agents.rollout import Collector, derive_seed
from creditgym.envs.redteam import OpponentPool
from creditgym.trajectory import Episode, TaskSpec

__all__ = ["OpponentPools", "Snapshot", "SnapshotPool", "opponent_role"]

OPPONENT_OF = {"attacker": "defender", "defender": "attacker"}
"""The other role of the two-player red-team game."""


def opponent_role(role: str, roles: Sequence[str]) -> str:
    """The other role of a two-role game."""
    others = [r for r in roles if r != role]
    if len(others) != 1:
        raise ValueError(f"self-play opponent pools need exactly two roles, got {list(roles)}")
    return others[0]


@dataclass(repr=False)
class Snapshot:
    """A frozen copy of one role's policy after `update` updates; as an Opponent (`name`,
    `__call__(messages) -> reply`) it answers chat messages, seeded by the messages so the same
    conversation gets the same reply."""

    role: str
    update: int
    policy: Any
    sampling: Sampling = field(default_factory=lambda: Sampling(max_new_tokens=64))
    name: str = field(init=False)
    """`"{role}@{update}"`, e.g. "defender@12" (reported as the episodes' `meta["opponent"]`)."""

    def __post_init__(self) -> None:
        self.name = f"{self.role}@{self.update}"

    def __repr__(self) -> str:
        return f"Snapshot({self.name})"

    def __call__(self, messages: list[dict[str, str]]) -> str:
        ids = self.policy.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
        digest = hashlib.sha1(json.dumps(messages, sort_keys=True).encode()).digest()
        seed = derive_seed(self.update, int.from_bytes(digest[:4], "little"))
        sampling = Sampling(temperature=self.sampling.temperature, top_p=self.sampling.top_p,
                            max_new_tokens=self.sampling.max_new_tokens, seed=seed)  # fmt: skip
        gen = self.policy.generate([Context(ids=[int(i) for i in ids], messages=messages, role=self.role)], sampling)[0]
        return gen.text


@dataclass(repr=False)
class SnapshotPool(OpponentPool):
    """An OpponentPool of snapshots with a fixed repr (env kwargs are keyed by repr: adding a
    snapshot must not make the Collector build new envs)."""

    label: str = "pool"

    def __repr__(self) -> str:
        return f"SnapshotPool({self.label})"


def frozen_snapshot(policy: TrainablePolicy) -> TrainablePolicy:
    """A copy of `policy` with its own frozen weights (an opponent snapshot; the KL reference of a
    policy without LoRA)."""
    snap = copy.copy(policy)
    snap.model = copy.deepcopy(policy.model)
    for p in snap.model.parameters():
        p.requires_grad_(False)
    snap.model.eval()
    return snap


class OpponentPools:
    """One pool of snapshots per trained role; see the module docstring.

    Args:
        policies: the trained policies by role (`{"agent": p}` for single-role training).
        every: snapshot cadence in updates (> 0).
        latest_prob: probability of drawing a pool's latest snapshot (ENVS.md: 0.5).
        env_kwargs: single-role training: `victim="pool"` / `attacker="pool"` name the pooled opponent.
        sampling: decoding of snapshots answering as an env opponent (single-role pools).
        max_snapshots: keep at most this many snapshots per role (oldest dropped; None keeps all).
        seed: seeds the two-player opponent draws.
    """

    def __init__(
        self,
        policies: Mapping[str, TrainablePolicy],
        every: int,
        latest_prob: float = 0.5,
        env_kwargs: Mapping[str, Any] | None = None,
        sampling: Sampling | None = None,
        max_snapshots: int | None = None,
        seed: int = 0,
    ):
        if every < 1:
            raise ValueError(f"opponent pools snapshot every N >= 1 updates, got every={every}")
        if not 0.0 <= latest_prob <= 1.0:
            raise ValueError(f"latest_prob must lie in [0, 1], got {latest_prob}")
        kw = dict(env_kwargs or {})
        self.policies = dict(policies)
        self.every, self.latest_prob, self.max_snapshots = int(every), float(latest_prob), max_snapshots
        self.sampling = sampling or Sampling(max_new_tokens=64)
        self.two_player = len(self.policies) > 1
        self.single_role_opponent = None if self.two_player else next(
            (side for key, side in (("victim", "defender"), ("attacker", "attacker")) if kw.get(key) == "pool"), None)
        if self.two_player:
            for role in self.policies:
                opponent_role(role, list(self.policies))
        elif self.single_role_opponent is None:
            raise ValueError("opponent pools need two trained roles (policies={'attacker': ..., 'defender': ...}) or a "
                             "single-role env naming its opponent 'pool' (env_kwargs victim='pool' or attacker='pool')")
        self.pools = {role: SnapshotPool([], latest_prob=self.latest_prob, label=role) for role in self.policies}
        self.rng = np.random.default_rng([int(seed), 0x5E1F])
        self.last_snapshot = -1
        self._calls = 0

    # ------------------------------------------------------------------ snapshots
    def maybe_snapshot(self, updates: int) -> bool:
        """Freeze every role into its pool when `updates` is a multiple of `every` (once per update count)."""
        if updates % self.every or updates == self.last_snapshot:
            return False
        for role, policy in self.policies.items():
            self._add(role, updates, frozen_snapshot(policy))
        self.last_snapshot = updates
        return True

    def _add(self, role: str, updates: int, policy: TrainablePolicy) -> None:
        side = self.single_role_opponent or role
        pool = self.pools[role]
        pool.add(Snapshot(side, updates, policy, self.sampling))
        if self.max_snapshots is not None and len(pool.members) > self.max_snapshots:
            del pool.members[0]
            pool.weights = None if pool.weights is None else list(pool.weights)[1:]

    def env_kwargs(self, env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Single-role training: the env kwargs with the pool as `opponent` (else unchanged)."""
        if self.single_role_opponent is None:
            return dict(env_kwargs)
        return {**env_kwargs, "opponent": self.pools[next(iter(self.policies))]}

    # ------------------------------------------------------------------ two-player collection
    def draw(self, pool_role: str) -> Snapshot:
        """An opponent from `pool_role`'s pool (latest with `latest_prob`), with the pools' generator."""
        member = self.pools[pool_role].sample(self.rng)
        assert isinstance(member, Snapshot)
        return member

    def collect(
        self, collector: Collector, num_groups: int, seed: int, tasks: Sequence[TaskSpec] | None, updates: int
    ) -> list[Episode]:
        """One round: snapshot if due, then (two players) each group's learner against a drawn
        snapshot of the other role; returns the learners' episodes only."""
        self.maybe_snapshot(updates)
        if not self.two_player:
            return collector.collect(num_groups, seed=seed, tasks=tasks)
        roles = list(self.policies)
        learners = [roles[(g + self._calls) % len(roles)] for g in range(num_groups)]
        self._calls += 1
        opponents = [self.draw(opponent_role(r, roles)) for r in learners]
        overrides = [{r: self.policies[r], o.role: o.policy} for r, o in zip(learners, opponents)]
        episodes = collector.collect(num_groups, seed=seed, tasks=tasks, group_policies=overrides)
        by_group: dict[str, int] = {}
        for ep in episodes:
            by_group.setdefault(ep.group_id, len(by_group))
        out = []
        for ep in episodes:
            g = by_group[ep.group_id]
            if ep.role == learners[g]:
                out.append(dataclasses.replace(ep, meta={**ep.meta, "opponent": opponents[g].name}))
        return out

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Snapshots (update number and weights, on the CPU), the draw generator and counters."""
        snaps = {role: [(s.update, {k: v.detach().cpu().clone() for k, v in s.policy.model.state_dict().items()})
                        for s in pool.members if isinstance(s, Snapshot)]
                 for role, pool in self.pools.items()}  # fmt: skip
        return {"snapshots": snaps, "rng": self.rng.bit_generator.state, "last_snapshot": self.last_snapshot,
                "calls": self._calls}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = set(self.pools) - set(state["snapshots"])
        if missing:
            raise ValueError(f"the checkpoint has no opponent pool for roles {sorted(missing)}; resume with the run's policies")
        for role, snaps in state["snapshots"].items():
            self.pools[role].members.clear()
            self.pools[role].weights = None
            for update, weights in snaps:
                policy = frozen_snapshot(self.policies[role])
                with torch.no_grad():
                    policy.model.load_state_dict(weights)
                self._add(role, int(update), policy)
        self.rng.bit_generator.state = state["rng"]
        self.last_snapshot, self._calls = int(state["last_snapshot"]), int(state["calls"])
