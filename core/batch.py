"""CreditBatch: a list of Episodes packed into right-padded tensors.

Shape suffixes: B episodes, K turn slots, T token slots (see design/CREDIT.md section 1.1 for the
meaning of every field). K is `max_b(n_b + truncated_b)`, so the slot after a truncated episode's
last turn exists for a bootstrap value. `ids_BT` holds every token of each episode in order
(per turn: observation tokens then action tokens; then the final observation), so a trainer can
recompute logprobs on exactly the packed layout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from creditgym.trajectory import Episode

__all__ = ["CreditBatch", "prefix_node_ids"]

_MASK63 = (1 << 63) - 1


def prefix_node_ids(group_key: str, action_ids_per_turn: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Stable prefix-tree node ids: a blake2b chain over the group key and each turn's action ids.

    Two episodes of the same group with the same action prefix through turn k get the same id at k
    (and at every earlier turn). Python's `hash` is salted per process, so it is never used here.
    """
    h = hashlib.blake2b(group_key.encode(), digest_size=8).digest()
    out = []
    for ids in action_ids_per_turn:
        m = hashlib.blake2b(h, digest_size=8)
        m.update(np.asarray(ids, dtype=np.int64).tobytes())
        m.update(b"|")
        h = m.digest()
        out.append(int.from_bytes(h, "little") & _MASK63)
    return tuple(out)


def _dense_ids(keys: list[Any], lookup: dict[Any, int]) -> list[int]:
    return [lookup.setdefault(k, len(lookup)) for k in keys]


@dataclass(frozen=True)
class CreditBatch:
    """Packed episodes. Float tensors are float32; id tensors int64 with -1 at padding; masks bool."""

    rewards_BK: torch.Tensor
    turn_mask_BK: torch.Tensor
    outcome_B: torch.Tensor
    group_B: torch.Tensor
    state_BK: torch.Tensor
    node_BK: torch.Tensor
    terminated_B: torch.Tensor
    truncated_B: torch.Tensor
    token_turn_BT: torch.Tensor
    loss_mask_BT: torch.Tensor
    ids_BT: torch.Tensor | None = None
    attention_mask_BT: torch.Tensor | None = None
    logprobs_BT: torch.Tensor | None = None
    probe_BK1: torch.Tensor | None = None
    values_BK: torch.Tensor | None = None
    token_values_BT: torch.Tensor | None = None
    greedy_return_B: torch.Tensor | None = None
    episode_ids: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    state_keys: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ shape helpers
    @property
    def B(self) -> int:
        return int(self.turn_mask_BK.shape[0])

    @property
    def K(self) -> int:
        return int(self.turn_mask_BK.shape[1])

    @property
    def T(self) -> int:
        return int(self.token_turn_BT.shape[1])

    @property
    def n_turns_B(self) -> torch.Tensor:
        return self.turn_mask_BK.sum(1)

    @property
    def device(self) -> torch.device:
        return self.turn_mask_BK.device

    def num_action_tokens(self) -> int:
        return int(self.loss_mask_BT.sum())

    # ------------------------------------------------------------------ packing
    @classmethod
    def from_episodes(
        cls,
        episodes: Sequence[Episode],
        outcome_key: str | None = None,
        probe_key: str | None = None,
    ) -> CreditBatch:
        """Pack episodes (see the module docstring). `outcome_key` names an `Episode.outcome` entry
        to use as `outcome_B` (default: the sum of turn rewards); `probe_key` picks the probe
        (`"gold"`, `"siop"`); None packs the only key present and raises if there are several."""
        if len(episodes) == 0:
            raise ValueError("CreditBatch.from_episodes needs at least one episode")
        B = len(episodes)
        n_B = np.array([ep.num_turns for ep in episodes], dtype=np.int64)
        trunc_B = np.array([ep.truncated for ep in episodes], dtype=bool)
        term_B = np.array([ep.terminated for ep in episodes], dtype=bool)
        K = max(1, int((n_B + trunc_B).max()))
        lengths = [
            sum(len(t.obs_ids) + len(t.action_ids) for t in ep.turns) + len(ep.final_obs_ids) for ep in episodes
        ]
        T = max(1, max(lengths))

        rewards = np.zeros((B, K), np.float64)
        state = np.full((B, K), -1, np.int64)
        node = np.full((B, K), -1, np.int64)
        ids = np.zeros((B, T), np.int64)
        attn = np.zeros((B, T), np.int64)
        tok_turn = np.full((B, T), -1, np.int64)
        loss = np.zeros((B, T), bool)
        logp = np.zeros((B, T), np.float32)
        outcome = np.zeros(B, np.float64)

        state_lookup: dict[str, int] = {}
        node_lookup: dict[int, int] = {}
        group_lookup: dict[tuple[str, str], int] = {}
        group = _dense_ids([(ep.group_id, ep.role) for ep in episodes], group_lookup)
        probe_key = _resolve_probe_key(episodes, probe_key)
        probe = np.zeros((B, K + 1), np.float64) if probe_key is not None else None
        has_greedy = any("greedy_return" in ep.meta for ep in episodes)
        greedy = np.full(B, math.nan, np.float64) if has_greedy else None

        for b, ep in enumerate(episodes):
            n = ep.num_turns
            rewards[b, :n] = [t.reward for t in ep.turns]
            state[b, :n] = _dense_ids([t.state_key for t in ep.turns], state_lookup)
            raw_nodes = ep.node_ids
            if raw_nodes is None:
                raw_nodes = prefix_node_ids(f"{ep.group_id}\x00{ep.role}", [t.action_ids for t in ep.turns])
            node[b, :n] = _dense_ids(list(raw_nodes), node_lookup)
            pos = 0
            for k, t in enumerate(ep.turns):
                no, na = len(t.obs_ids), len(t.action_ids)
                if na == 0:
                    raise ValueError(
                        f"episode {b} ({ep.episode_id}) turn {k} has no action tokens; every turn needs at "
                        "least one (keep the stop token)"
                    )
                ids[b, pos : pos + no] = t.obs_ids
                pos += no
                sl = slice(pos, pos + na)
                ids[b, sl] = t.action_ids
                tok_turn[b, sl] = k
                loss[b, sl] = np.asarray(t.action_loss_mask, dtype=bool)
                logp[b, sl] = t.action_logprobs
                pos += na
            nf = len(ep.final_obs_ids)
            ids[b, pos : pos + nf] = ep.final_obs_ids
            attn[b, : pos + nf] = 1
            if outcome_key is None:
                outcome[b] = rewards[b, :n].sum()
            else:
                if outcome_key not in ep.outcome:
                    raise KeyError(
                        f"outcome_key {outcome_key!r} missing from episode {b} ({ep.episode_id}); its outcome "
                        f"has {sorted(ep.outcome)}"
                    )
                outcome[b] = float(ep.outcome[outcome_key])
            if probe is not None and probe_key is not None:
                probe[b, 0] = ep.probe0.get(probe_key, math.nan)
                probe[b, 1 : n + 1] = [t.probe.get(probe_key, math.nan) for t in ep.turns]
            if greedy is not None and "greedy_return" in ep.meta:
                greedy[b] = float(ep.meta["greedy_return"])

        turn_mask = np.arange(K)[None, :] < n_B[:, None]
        batch = cls(
            rewards_BK=torch.from_numpy(rewards.astype(np.float32)),
            turn_mask_BK=torch.from_numpy(turn_mask),
            outcome_B=torch.from_numpy(outcome.astype(np.float32)),
            group_B=torch.tensor(group, dtype=torch.int64),
            state_BK=torch.from_numpy(state),
            node_BK=torch.from_numpy(node),
            terminated_B=torch.from_numpy(term_B),
            truncated_B=torch.from_numpy(trunc_B),
            token_turn_BT=torch.from_numpy(tok_turn),
            loss_mask_BT=torch.from_numpy(loss),
            ids_BT=torch.from_numpy(ids),
            attention_mask_BT=torch.from_numpy(attn),
            logprobs_BT=torch.from_numpy(logp),
            probe_BK1=torch.from_numpy(probe.astype(np.float32)) if probe is not None else None,
            greedy_return_B=torch.from_numpy(greedy.astype(np.float32)) if greedy is not None else None,
            episode_ids=tuple(ep.episode_id for ep in episodes),
            roles=tuple(ep.role for ep in episodes),
            state_keys=tuple(state_lookup),
            meta={"outcome_key": outcome_key, "probe_key": probe_key},
        )
        batch.validate()
        return batch

    # ------------------------------------------------------------------ checks and copies
    def validate(self) -> None:
        """Raise ValueError naming the first broken invariant (CREDIT.md 1.1 and 6.1)."""
        B, K = self.turn_mask_BK.shape
        for name in ("rewards_BK", "state_BK", "node_BK"):
            if tuple(getattr(self, name).shape) != (B, K):
                raise ValueError(f"CreditBatch.{name} has shape {tuple(getattr(self, name).shape)}, expected {(B, K)}")
        for name in ("outcome_B", "group_B", "terminated_B", "truncated_B"):
            if tuple(getattr(self, name).shape) != (B,):
                raise ValueError(f"CreditBatch.{name} has shape {tuple(getattr(self, name).shape)}, expected {(B,)}")
        both = self.terminated_B & self.truncated_B
        neither = ~(self.terminated_B | self.truncated_B)
        bad = (both | neither).nonzero()
        if bad.numel():
            b = int(bad[0, 0])
            raise ValueError(
                f"episode {b}: exactly one of terminated/truncated must be true "
                f"(got terminated={bool(self.terminated_B[b])}, truncated={bool(self.truncated_B[b])})"
            )
        n_B = self.turn_mask_BK.sum(1)
        if not torch.equal(self.turn_mask_BK, torch.arange(K, device=self.device)[None, :] < n_B[:, None]):
            raise ValueError("turn_mask_BK must be right-padded: valid turns are exactly k < n_b")
        if bool(((self.state_BK < 0) != ~self.turn_mask_BK).any()):
            raise ValueError("state_BK must be -1 exactly at padded turns")
        if bool(((self.node_BK < 0) != ~self.turn_mask_BK).any()):
            raise ValueError("node_BK must be -1 exactly at padded turns")
        if bool((self.loss_mask_BT & (self.token_turn_BT < 0)).any()):
            raise ValueError("loss_mask_BT may be 1 only on action tokens (token_turn_BT >= 0)")
        if self.values_BK is not None and tuple(self.values_BK.shape) != (B, K):
            raise ValueError(f"values_BK has shape {tuple(self.values_BK.shape)}, expected {(B, K)}")
        if self.probe_BK1 is not None and tuple(self.probe_BK1.shape) != (B, K + 1):
            raise ValueError(f"probe_BK1 has shape {tuple(self.probe_BK1.shape)}, expected {(B, K + 1)}")
        if self.token_values_BT is not None and self.token_values_BT.shape != self.token_turn_BT.shape:
            raise ValueError("token_values_BT must have the shape of token_turn_BT")

    def with_values(
        self, values_BK: torch.Tensor | None = None, token_values_BT: torch.Tensor | None = None
    ) -> CreditBatch:
        """A copy with critic or Monte-Carlo values attached (`[B, K]` and/or `[B, T]`)."""
        changes: dict[str, Any] = {}
        if values_BK is not None:
            if tuple(values_BK.shape) != (self.B, self.K):
                raise ValueError(
                    f"values_BK has shape {tuple(values_BK.shape)}, expected {(self.B, self.K)} "
                    "(K includes the bootstrap slot of truncated episodes)"
                )
            changes["values_BK"] = values_BK.to(self.device, torch.float32)
        if token_values_BT is not None:
            if tuple(token_values_BT.shape) != (self.B, self.T):
                raise ValueError(f"token_values_BT has shape {tuple(token_values_BT.shape)}, expected {(self.B, self.T)}")
            changes["token_values_BT"] = token_values_BT.to(self.device, torch.float32)
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> CreditBatch:
        """A copy with every tensor on `device`."""
        changes = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **changes)


def _resolve_probe_key(episodes: Sequence[Episode], probe_key: str | None) -> str | None:
    if probe_key is not None:
        return probe_key
    keys = sorted({k for ep in episodes for k in ep.probe0} | {k for ep in episodes for t in ep.turns for k in t.probe})
    if len(keys) > 1:
        raise ValueError(f"episodes carry several probe keys {keys}; pass probe_key= to pick one")
    return keys[0] if keys else None
