"""CreditBatch: a list of Episodes packed into right-padded tensors.

Shape suffixes: B episodes, K turn slots, T token slots (see design/CREDIT.md section 1.1 for the
meaning of every field). K is `max_b(n_b + truncated_b)`, so the slot after a truncated episode's
last turn exists for a bootstrap value. `ids_BT` holds every token of each episode in order
(per turn: observation tokens then action tokens; then the final observation), so a trainer can
recompute logprobs on exactly the packed layout.

The row-token layout (R rows, T' token slots; `ids_RT`, `row_episode_R`, ...) is what the trainers'
forward passes run on. An episode collected with the `full` history is one row, identical to its
`ids_BT` row; one collected with a per-turn history (`Episode.per_turn_rows`) is one row per turn
(that turn's prompt and action, exactly what the policy saw and sampled). Each row is a contiguous
slice `[row_start_R, row_start_R + row_len)` of its episode's `ids_BT` row, so any `[B, T]` tensor
(token advantages, masks, logprobs) maps to rows by index (`to_rows`) and back (`from_rows`);
estimators never see rows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from creditgym.token_batch import dense_ids, from_token_tensors, prefix_node_ids, to_token_tensors
from creditgym.trajectory import Episode

__all__ = ["CreditBatch"]


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
    ids_RT: torch.Tensor | None = None
    attention_mask_RT: torch.Tensor | None = None
    loss_mask_RT: torch.Tensor | None = None
    logprobs_RT: torch.Tensor | None = None
    token_turn_RT: torch.Tensor | None = None
    row_episode_R: torch.Tensor | None = None
    row_turn_R: torch.Tensor | None = None
    row_start_R: torch.Tensor | None = None
    abstract_BK1: torch.Tensor | None = None
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

    # ------------------------------------------------------------------ row-token layout
    @property
    def R(self) -> int:
        """Number of rows of the row-token layout (B when every episode is one row)."""
        return int(self.row_episode_R.shape[0]) if self.row_episode_R is not None else self.B

    def row_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(ids_RT, attention_mask_RT)` for a forward pass; a batch without a row layout (built by
        hand) uses its episode layout, one row per episode."""
        if self.ids_RT is not None and self.attention_mask_RT is not None:
            return self.ids_RT, self.attention_mask_RT
        if self.ids_BT is None or self.attention_mask_BT is None:
            raise ValueError("this CreditBatch has no token ids (ids_BT / ids_RT); pack it with CreditBatch.from_episodes")
        return self.ids_BT, self.attention_mask_BT

    def _row_index(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(episode index, episode-layout column, valid mask), each `[R, T']`, on `device`."""
        if self.row_episode_R is None or self.row_start_R is None or self.attention_mask_RT is None:
            B, T = self.token_turn_BT.shape
            b_RT = torch.arange(B, device=device)[:, None].expand(B, T)
            t_RT = torch.arange(T, device=device)[None, :].expand(B, T)
            return b_RT, t_RT, torch.ones(B, T, dtype=torch.bool, device=device)
        R, Tr = self.attention_mask_RT.shape
        len_R1 = self.attention_mask_RT.sum(1, keepdim=True).to(device)
        valid_RT = torch.arange(Tr, device=device)[None, :] < len_R1
        b_RT = self.row_episode_R.to(device)[:, None].expand(R, Tr)
        t_RT = self.row_start_R.to(device)[:, None] + torch.arange(Tr, device=device)[None, :]
        return b_RT, torch.where(valid_RT, t_RT, torch.zeros_like(t_RT)), valid_RT

    def to_rows(self, x_BT: torch.Tensor, fill: float = 0) -> torch.Tensor:
        """Map a `[B, T]` episode-layout tensor (token advantages, a mask, logprobs) onto the row
        layout by index: `out[r, t] = x_BT[row_episode_R[r], row_start_R[r] + t]`, `fill` on padding."""
        b_RT, t_RT, valid_RT = self._row_index(x_BT.device)
        x_RT = x_BT[b_RT, t_RT]
        return torch.where(valid_RT, x_RT, torch.full_like(x_RT, fill))

    def from_rows(self, x_RT: torch.Tensor, fill: float = 0) -> torch.Tensor:
        """The inverse of `to_rows`: a `[B, T]` tensor holding each row's values at their episode
        positions (`fill` where no row covers a token, e.g. a per-turn episode's final observation)."""
        b_RT, t_RT, valid_RT = self._row_index(x_RT.device)
        out = torch.full(tuple(self.token_turn_BT.shape), fill, dtype=x_RT.dtype, device=x_RT.device)
        out[b_RT[valid_RT], t_RT[valid_RT]] = x_RT[valid_RT]
        return out

    # ------------------------------------------------------------------ packing
    from_token_tensors = classmethod(from_token_tensors)  # an engine's token tensors (core/token_batch.py)
    to_token_tensors = to_token_tensors  # and back: a [B, T] tensor onto that engine layout

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
        group = dense_ids([(ep.group_id, ep.role) for ep in episodes], group_lookup)
        probe_key = _resolve_probe_key(episodes, probe_key)
        probe = np.zeros((B, K + 1), np.float64) if probe_key is not None else None
        has_greedy = any("greedy_return" in ep.meta for ep in episodes)
        abstract = _pack_abstract(episodes, n_B, K)
        greedy = np.full(B, math.nan, np.float64) if has_greedy else None

        rows: list[tuple[int, int, int, int]] = []  # (episode, turn or -1, start, length)
        for b, ep in enumerate(episodes):
            n = ep.num_turns
            rewards[b, :n] = [t.reward for t in ep.turns]
            state[b, :n] = dense_ids([t.state_key for t in ep.turns], state_lookup)
            raw_nodes = ep.node_ids
            if raw_nodes is None:
                raw_nodes = prefix_node_ids(f"{ep.group_id}\x00{ep.role}", [t.action_ids for t in ep.turns])
            node[b, :n] = dense_ids(list(raw_nodes), node_lookup)
            pos = 0
            for k, t in enumerate(ep.turns):
                no, na = len(t.obs_ids), len(t.action_ids)
                if na == 0:
                    raise ValueError(
                        f"episode {b} ({ep.episode_id}) turn {k} has no action tokens; every turn needs at "
                        "least one (keep the stop token)"
                    )
                ids[b, pos : pos + no] = t.obs_ids
                if ep.per_turn_rows:
                    rows.append((b, k, pos, no + na))
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
            if not ep.per_turn_rows:
                rows.append((b, -1, 0, pos + nf))
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
        ids_t, attn_t, loss_t = torch.from_numpy(ids), torch.from_numpy(attn), torch.from_numpy(loss)
        logp_t, tok_turn_t = torch.from_numpy(logp), torch.from_numpy(tok_turn)
        rows.sort()
        row_R = torch.tensor([r[0] for r in rows], dtype=torch.int64)
        row_turn_R = torch.tensor([r[1] for r in rows], dtype=torch.int64)
        row_start_R = torch.tensor([r[2] for r in rows], dtype=torch.int64)
        if all(not ep.per_turn_rows for ep in episodes):  # one row per episode: the same tensors
            row_tensors = (ids_t, attn_t, loss_t, logp_t, tok_turn_t)
        else:
            Tr = max(1, max(r[3] for r in rows)) if rows else 1
            attn_RT = torch.from_numpy(np.arange(Tr)[None, :] < np.array([r[3] for r in rows])[:, None]).to(torch.int64)
            b_RT = row_R[:, None].expand(len(rows), Tr)
            t_RT = torch.where(attn_RT.bool(), row_start_R[:, None] + torch.arange(Tr)[None, :], 0)
            valid_RT = attn_RT.bool()
            row_tensors = (
                torch.where(valid_RT, ids_t[b_RT, t_RT], 0), attn_RT, loss_t[b_RT, t_RT] & valid_RT,
                torch.where(valid_RT, logp_t[b_RT, t_RT], 0.0), torch.where(valid_RT, tok_turn_t[b_RT, t_RT], -1),
            )
        batch = cls(
            rewards_BK=torch.from_numpy(rewards.astype(np.float32)),
            turn_mask_BK=torch.from_numpy(turn_mask),
            outcome_B=torch.from_numpy(outcome.astype(np.float32)),
            group_B=torch.tensor(group, dtype=torch.int64),
            state_BK=torch.from_numpy(state),
            node_BK=torch.from_numpy(node),
            terminated_B=torch.from_numpy(term_B),
            truncated_B=torch.from_numpy(trunc_B),
            token_turn_BT=tok_turn_t,
            loss_mask_BT=loss_t,
            ids_BT=ids_t,
            attention_mask_BT=attn_t,
            logprobs_BT=logp_t,
            ids_RT=row_tensors[0],
            attention_mask_RT=row_tensors[1],
            loss_mask_RT=row_tensors[2],
            logprobs_RT=row_tensors[3],
            token_turn_RT=row_tensors[4],
            row_episode_R=row_R,
            row_turn_R=row_turn_R,
            row_start_R=row_start_R,
            probe_BK1=torch.from_numpy(probe.astype(np.float32)) if probe is not None else None,
            greedy_return_B=torch.from_numpy(greedy.astype(np.float32)) if greedy is not None else None,
            abstract_BK1=torch.from_numpy(abstract) if abstract is not None else None,
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
        if self.abstract_BK1 is not None:
            if tuple(self.abstract_BK1.shape) != (B, K + 1):
                raise ValueError(f"abstract_BK1 has shape {tuple(self.abstract_BK1.shape)}, expected {(B, K + 1)}")
            if bool(((self.abstract_BK1[:, :K] < 0) & self.turn_mask_BK).any()):
                raise ValueError("abstract_BK1 must hold an id (>= 0) at every valid turn")
        self._validate_rows()

    def _validate_rows(self) -> None:
        names_R = ("row_episode_R", "row_turn_R", "row_start_R")
        names_RT = ("ids_RT", "attention_mask_RT", "loss_mask_RT", "logprobs_RT", "token_turn_RT")
        if self.row_episode_R is None:
            if any(getattr(self, n) is not None for n in names_R + names_RT):
                raise ValueError("a row layout needs row_episode_R, row_start_R and attention_mask_RT together")
            return
        R = int(self.row_episode_R.shape[0])
        for n in names_R:
            x = getattr(self, n)
            if x is None or tuple(x.shape) != (R,):
                raise ValueError(f"CreditBatch.{n} must have shape {(R,)} (one entry per row)")
        if self.attention_mask_RT is None or int(self.attention_mask_RT.shape[0]) != R:
            raise ValueError(f"CreditBatch.attention_mask_RT must have {R} rows")
        shape_RT = tuple(self.attention_mask_RT.shape)
        for n in names_RT:
            x = getattr(self, n)
            if x is not None and tuple(x.shape) != shape_RT:
                raise ValueError(f"CreditBatch.{n} has shape {tuple(x.shape)}, expected {shape_RT}")
        start_R: torch.Tensor = self.row_start_R  # type: ignore[assignment]  # checked just above
        ends_R = start_R + self.attention_mask_RT.sum(1)
        if R and (bool((start_R < 0).any()) or int(ends_R.max()) > self.T):
            raise ValueError("every row must be a slice of its episode's tokens: 0 <= row_start_R and end <= T")
        if R and (int(self.row_episode_R.min()) < 0 or int(self.row_episode_R.max()) >= self.B):
            raise ValueError(f"row_episode_R must index episodes 0..{self.B - 1}")

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
        """A copy with every tensor on `device` (tensors shared between fields, e.g. `ids_RT is ids_BT`
        for full-history batches, stay shared)."""
        moved: dict[int, torch.Tensor] = {}
        changes = {}
        for f in dataclasses.fields(self):
            x = getattr(self, f.name)
            if isinstance(x, torch.Tensor):
                if id(x) not in moved:
                    moved[id(x)] = x.to(device)
                changes[f.name] = moved[id(x)]
        return dataclasses.replace(self, **changes)


def _pack_abstract(episodes: Sequence[Episode], n_B: np.ndarray, K: int) -> np.ndarray | None:
    """`abstract_BK1` (CREDIT.md 1.1 addition, estimator `pvd`): dense ids of each turn's
    `info["abstract_state"]` (a turn without one uses its `state_key`), then at column n_b the episode's
    `meta["final_abstract_state"]` (-1 when absent); -1 at padding. None when no turn carries one."""
    if not any("abstract_state" in t.info for ep in episodes for t in ep.turns):
        return None
    out = np.full((len(episodes), K + 1), -1, np.int64)
    lookup: dict[str, int] = {}
    for b, ep in enumerate(episodes):
        keys = [str(t.info.get("abstract_state", f"state_key:{t.state_key}")) for t in ep.turns]
        out[b, : n_B[b]] = dense_ids(keys, lookup)
        if "final_abstract_state" in ep.meta:
            out[b, n_B[b]] = lookup.setdefault(str(ep.meta["final_abstract_state"]), len(lookup))
    return out


def _resolve_probe_key(episodes: Sequence[Episode], probe_key: str | None) -> str | None:
    if probe_key is not None:
        return probe_key
    keys = sorted({k for ep in episodes for k in ep.probe0} | {k for ep in episodes for t in ep.turns for k in t.probe})
    if len(keys) > 1:
        raise ValueError(f"episodes carry several probe keys {keys}; pass probe_key= to pick one")
    return keys[0] if keys else None
