"""Token-level packing helpers: prefix-tree node ids, and a CreditBatch from an engine's token tensors.

`from_token_tensors` (exposed as `CreditBatch.from_token_tensors`) builds a batch from what a training
engine (TRL, verl, OpenRLHF) holds: one row of tokens per episode in the engine's own layout (left
padding allowed), a loss mask that is 1 on the tokens the policy sampled, rewards per token or per turn,
and group ids. Turn k of a row is its k-th run of loss-mask ones unless `token_turn_BT` says otherwise;
observation tokens between the runs are the env's replies. `to_token_tensors` (exposed as
`CreditBatch.to_token_tensors`) maps any `[B, T]` tensor of the batch, e.g. `Advantages.token_BT`, back
onto the engine's layout. docs/scale.md, "Token tensors", shows both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from creditgym.batch import CreditBatch

__all__ = ["dense_ids", "from_token_tensors", "prefix_node_ids", "to_token_tensors", "turns_from_loss_mask"]

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


def dense_ids(keys: Sequence[Hashable], lookup: dict[Any, int]) -> list[int]:
    """0, 1, 2, ... in order of first appearance; `lookup` carries the numbering across calls."""
    return [lookup.setdefault(k, len(lookup)) for k in keys]


def turns_from_loss_mask(loss_mask_BT: torch.Tensor) -> torch.Tensor:
    """`token_turn_BT`: k on the k-th run of ones of each row's loss mask, -1 elsewhere."""
    mask = loss_mask_BT.bool()
    starts = mask & ~torch.nn.functional.pad(mask[:, :-1], (1, 0), value=False)
    return torch.where(mask, starts.long().cumsum(1) - 1, -1)


def from_token_tensors(
    cls: type[CreditBatch],
    loss_mask_BT: torch.Tensor,
    group_ids: Sequence[Hashable] | torch.Tensor,
    *,
    rewards_BT: torch.Tensor | None = None,
    rewards_BK: torch.Tensor | None = None,
    ids_BT: torch.Tensor | None = None,
    attention_mask_BT: torch.Tensor | None = None,
    token_turn_BT: torch.Tensor | None = None,
    terminated_B: torch.Tensor | None = None,
    truncated_B: torch.Tensor | None = None,
    outcome_B: torch.Tensor | None = None,
    outcome_key: str | None = None,
    state_keys: Sequence[Sequence[Hashable]] | None = None,
    node_ids: Sequence[Sequence[int]] | None = None,
    roles: Sequence[str] | None = None,
    values_BK: torch.Tensor | None = None,
    token_values_BT: torch.Tensor | None = None,
    probe_BK1: torch.Tensor | None = None,
    probe_key: str | None = None,
    greedy_return_B: torch.Tensor | None = None,
    logprobs_BT: torch.Tensor | None = None,
    abstract_BK1: torch.Tensor | None = None,
    episode_ids: Sequence[str] | None = None,
) -> CreditBatch:
    """A CreditBatch from token tensors in an engine's layout (B rows, T token slots, any padding).

    Args:
        loss_mask_BT: 1 on the tokens the policy sampled and the loss trains (env tokens 0).
        group_ids: one id per row; rows of a group share task and seed (one baseline per
            `(group id, role)`, as in `from_episodes`).
        rewards_BT / rewards_BK: exactly one. Per token: a reward on a token belongs to the turn whose
            action precedes it (the last action token or the env's reply after it). Per turn: `[B, K']`
            with `K' >= ` the most turns of a row; entries past a row's last turn are ignored.
        ids_BT, attention_mask_BT: the tokens and which slots hold one (default: all); each row's
            attended tokens must be contiguous (left and right padding are both fine). With `ids_BT`
            the batch carries one training row per episode and node ids are derived from the action
            prefixes as `from_episodes` does.
        token_turn_BT: turn index of every action token, -1 elsewhere (default: runs of the loss mask;
            give it when a turn has sampled tokens the loss skips inside it).
        terminated_B / truncated_B: default terminated (`~truncated_B` when only that is given).
        outcome_B, outcome_key: the outcome (default: the sum of turn rewards) and its name.
        state_keys / node_ids: per row, one key / one node id per turn. Default node ids: the prefix
            digest of the action ids (needs `ids_BT`; without ids every turn is its own node). Default
            state keys: the node ids (equal under the determinism contract: same task, same actions).
        values_BK, probe_BK1, greedy_return_B, abstract_BK1: as in CreditBatch (K as computed here:
            `max_b(n_b + truncated_b)`); token_values_BT, logprobs_BT: in the engine's layout.
    """
    B, T_in = loss_mask_BT.shape
    if len(group_ids) != B:
        raise ValueError(f"from_token_tensors: {len(group_ids)} group ids for {B} rows; give one per row")
    if (rewards_BT is None) == (rewards_BK is None):
        raise ValueError("from_token_tensors needs exactly one of rewards_BT (per token) or rewards_BK (per turn)")
    attn = torch.ones(B, T_in, dtype=torch.bool) if attention_mask_BT is None else attention_mask_BT.bool().cpu()
    loss_in = loss_mask_BT.bool().cpu()
    if bool((loss_in & ~attn).any()):
        raise ValueError("loss_mask_BT is 1 on a padding slot (attention_mask_BT 0); mask padding out of the loss")
    len_B = attn.sum(1)
    offset_B = torch.where(len_B > 0, attn.int().argmax(1), 0)
    T = max(1, int(len_B.max()))
    valid_BT = torch.arange(T)[None, :] < len_B[:, None]
    gather_BT = torch.where(valid_BT, offset_B[:, None] + torch.arange(T)[None, :], 0)
    if bool((torch.gather(attn, 1, gather_BT) & valid_BT).sum(1).ne(len_B).any()):
        raise ValueError("each row's attended tokens must be one contiguous span (padding only on the left/right)")

    def compact(x: torch.Tensor | None, fill: float = 0) -> torch.Tensor | None:
        if x is None:
            return None
        x = x.cpu()
        return torch.where(valid_BT, torch.gather(x, 1, gather_BT), torch.full((), fill, dtype=x.dtype))

    loss = compact(loss_in, False)
    tok_turn = turns_from_loss_mask(loss) if token_turn_BT is None else compact(token_turn_BT.long(), -1)
    assert loss is not None and tok_turn is not None
    n_B = (tok_turn.max(1).values + 1).clamp(min=0)
    trunc = torch.zeros(B, dtype=torch.bool) if truncated_B is None else truncated_B.bool().cpu()
    term = ~trunc if terminated_B is None else terminated_B.bool().cpu()
    K = max(1, int((n_B + trunc.long()).max()))
    turn_mask = torch.arange(K)[None, :] < n_B[:, None]

    if rewards_BK is not None:
        if rewards_BK.shape[0] != B or rewards_BK.shape[1] < int(n_B.max()):
            raise ValueError(f"rewards_BK has shape {tuple(rewards_BK.shape)}; it needs {B} rows and >= {int(n_B.max())} turns")
        r = torch.nn.functional.pad(rewards_BK.float().cpu(), (0, max(0, K - rewards_BK.shape[1])))[:, :K]
        rewards = torch.where(turn_mask, r, 0.0)
    else:
        assert rewards_BT is not None
        r_BT = compact(rewards_BT.float())
        owner_BT = tok_turn.cummax(1).values  # the turn of the last action at or before each token
        if bool(((owner_BT < 0) & (r_BT != 0)).any()):
            raise ValueError("rewards_BT has a reward before the row's first action token; put it on or after it")
        rewards = torch.zeros(B, K + 1).scatter_add_(1, torch.where(owner_BT < 0, K, owner_BT), r_BT)[:, :K]

    ids = compact(ids_BT.long()) if ids_BT is not None else None
    role_list = list(roles) if roles is not None else ["agent"] * B
    gids = group_ids.tolist() if isinstance(group_ids, torch.Tensor) else list(group_ids)
    group = dense_ids([(g, r) for g, r in zip(gids, role_list)], {})
    node_flat: list[int] = []
    state_flat: list[int] = []
    node_lookup: dict[Any, int] = {}
    state_lookup: dict[Any, int] = {}
    n_list = n_B.tolist()
    if node_ids is None and ids is not None:  # each turn's action ids, by (row, turn) in token order
        turn_np, ids_np = tok_turn.numpy(), ids.numpy()
        act_np = turn_np >= 0
        key_np = np.repeat(np.arange(B) * K, act_np.sum(1)) + turn_np[act_np]
        step_np = np.diff(key_np)
        segments: list[Any] = np.split(ids_np[act_np], np.flatnonzero(step_np) + 1) if act_np.any() else []
        if (step_np < 0).any() or len(segments) != int(n_B.sum()):
            raise ValueError("token_turn_BT must number each row's turns 0, 1, ... in token order, each with a token")
        seg_start = np.concatenate([[0], np.cumsum(n_B.numpy())])
    for b, n in enumerate(n_list):
        if node_ids is not None:
            raw: Sequence[Any] = list(node_ids[b])[:n]
        elif ids is not None:
            raw = prefix_node_ids(f"{gids[b]}\x00{role_list[b]}", segments[seg_start[b] : seg_start[b + 1]])
        else:
            raw = [(b, k) for k in range(n)]
        node_flat += dense_ids(raw, node_lookup)
        keys = list(state_keys[b])[:n] if state_keys is not None else [("node", x) for x in raw]
        if len(keys) < n:
            raise ValueError(f"row {b} has {n} turns but {len(keys)} state keys; give one per turn")
        state_flat += dense_ids(keys, state_lookup)
    node = torch.full((B, K), -1, dtype=torch.int64)
    state = torch.full((B, K), -1, dtype=torch.int64)
    node[turn_mask], state[turn_mask] = torch.tensor(node_flat, dtype=torch.int64), torch.tensor(state_flat, dtype=torch.int64)

    outcome = rewards.sum(1) if outcome_B is None else outcome_B.float().cpu()
    attn_T = valid_BT.long()
    logp = compact(logprobs_BT.float()) if logprobs_BT is not None else torch.zeros(B, T)
    row_fields: dict[str, Any] = {}
    if ids is not None:  # one training row per episode: the episode tensors themselves
        row_fields = dict(
            ids_RT=ids, attention_mask_RT=attn_T, loss_mask_RT=loss, logprobs_RT=logp, token_turn_RT=tok_turn,
            row_episode_R=torch.arange(B), row_turn_R=torch.full((B,), -1), row_start_R=torch.zeros(B, dtype=torch.int64),
        )
    batch = cls(
        rewards_BK=rewards.float(),
        turn_mask_BK=turn_mask,
        outcome_B=outcome,
        group_B=torch.tensor(group, dtype=torch.int64),
        state_BK=state,
        node_BK=node,
        terminated_B=term,
        truncated_B=trunc,
        token_turn_BT=tok_turn,
        loss_mask_BT=loss,
        ids_BT=ids,
        attention_mask_BT=attn_T if ids is not None else None,
        logprobs_BT=logp,
        probe_BK1=probe_BK1.float().cpu() if probe_BK1 is not None else None,
        values_BK=values_BK.float().cpu() if values_BK is not None else None,
        token_values_BT=compact(token_values_BT.float()) if token_values_BT is not None else None,
        greedy_return_B=greedy_return_B.float().cpu() if greedy_return_B is not None else None,
        abstract_BK1=abstract_BK1.long().cpu() if abstract_BK1 is not None else None,
        episode_ids=tuple(episode_ids) if episode_ids is not None else tuple(str(b) for b in range(B)),
        roles=tuple(role_list),
        state_keys=tuple(str(k) for k in state_lookup),
        meta={"outcome_key": outcome_key, "probe_key": probe_key, "token_offset_B": offset_B, "token_len_B": len_B, "token_T": T_in},
        **row_fields,
    )
    batch.validate()
    return batch


def to_token_tensors(batch: CreditBatch, x_BT: torch.Tensor, fill: float = 0) -> torch.Tensor:
    """Map a `[B, T]` tensor of `batch` (e.g. `Advantages.token_BT`) onto the engine layout the batch was
    built from by `from_token_tensors` (`fill` on padding). A batch from `from_episodes` has no engine
    layout: its tensors are already right-padded episode rows."""
    if "token_offset_B" not in batch.meta:
        raise ValueError("to_token_tensors needs a batch built by CreditBatch.from_token_tensors")
    offset_B, len_B = batch.meta["token_offset_B"].to(x_BT.device), batch.meta["token_len_B"].to(x_BT.device)
    B, T = x_BT.shape
    T_out = int(batch.meta["token_T"])
    t_T = torch.arange(T, device=x_BT.device)
    out = torch.full((B, T_out + T), fill, dtype=x_BT.dtype, device=x_BT.device)
    out.scatter_(1, offset_B[:, None] + t_T[None, :], torch.where(t_T[None, :] < len_B[:, None], x_BT, fill))
    return out[:, :T_out]
