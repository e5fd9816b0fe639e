"""Non-finite rewards through every registered credit estimator (METHODS.md 1.9).

For each name in `creditgym.credit.ESTIMATORS`, a batch of hand-built episodes gets NaN, +inf and -inf
rewards in some groups. Two runs per estimator:

* **with the trainer's drop** (the contract): the episodes go through `split_for_training` (core/
  trajectory.py, which drops every group holding a non-finite reward), then `CreditBatch.from_episodes`
  and `credit.compute`; the row is *contained* when every advantage of every kept turn and action
  token is finite;
* **without it** (informational): the poisoned episodes are packed as they are, and the row records
  whether non-finite advantages reach rows of finite groups (`spreads`), stay in the poisoned groups,
  or whether packing / the estimator refused the batch (`refused`).
"""

from __future__ import annotations

import math
import random
import traceback
from dataclasses import asdict, dataclass
from typing import Any

import torch

from creditgym import CreditBatch, Episode, Turn
from creditgym.credit import ESTIMATORS, compute
from creditgym.trajectory import split_for_training

__all__ = ["NonfiniteRow", "nonfinite_episodes", "run_estimator"]

POISON = {1: float("nan"), 3: float("inf"), 4: float("-inf")}  # group index -> reward put into one of its turns


@dataclass
class NonfiniteRow:
    estimator: str
    contained: bool
    dropped_groups: int
    without_drop: str  # "spreads" | "stays in poisoned groups" | "refused: ..." | "all finite"
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def nonfinite_episodes(n_groups: int = 6, group_size: int = 4, max_turns: int = 3, seed: int = 0) -> list[Episode]:
    """Episodes with every optional field an estimator may read (gold and siop probes, `siop_q`, the
    greedy return, ~1/4 truncated); groups in POISON get a NaN / inf / -inf reward in one episode."""
    rng = random.Random(seed)
    episodes = []
    for g in range(n_groups):
        for i in range(group_size):
            n = rng.randint(1, max_turns)
            turns = []
            for k in range(n):
                reward = float(rng.choice((0.0, 0.5, 1.0)))
                if g in POISON and i == 1 and k == n - 1:
                    reward = POISON[g]
                turns.append(Turn(
                    obs_ids=(1, 2), action_ids=tuple(rng.randrange(3, 50) for _ in range(rng.randint(1, 3))),
                    action_text="a", reward=reward, state_key=f"g{g}/s{k}/{rng.randrange(2)}",
                    probe={"gold": rng.random(), "siop": rng.random()},
                ))  # fmt: skip
            truncated = rng.random() < 0.25
            episodes.append(Episode(
                turns=tuple(turns), episode_id=f"e{g}-{i}", task_id=f"t{g}", group_id=f"g{g}", seed=g,
                terminated=not truncated, truncated=truncated,
                outcome={"success": float(rng.random() < 0.5), "siop_q": rng.random()},
                probe0={"gold": rng.random(), "siop": rng.random()}, meta={"greedy_return": rng.random()},
            ))  # fmt: skip
    return episodes


def _pack(episodes: list[Episode], needs: dict[str, Any]) -> CreditBatch:
    batch = CreditBatch.from_episodes(episodes, outcome_key=needs.get("outcome_key"), probe_key=needs.get("probe", "gold"))
    if needs.get("values"):  # critic or Monte-Carlo values: any finite numbers of the right shape
        g = torch.Generator().manual_seed(0)
        batch = batch.with_values(
            values_BK=torch.rand(batch.rewards_BK.shape, generator=g, dtype=batch.rewards_BK.dtype),
            token_values_BT=torch.rand(batch.token_turn_BT.shape, generator=g, dtype=batch.rewards_BK.dtype),
        )
    return batch


def _nonfinite_rows(batch: CreditBatch, adv: Any) -> set[int]:
    """Episode rows with a non-finite advantage on a valid turn or an action token."""
    bad_turn_B = (~torch.isfinite(adv.turn_BK) & batch.turn_mask_BK).any(1)
    bad_tok_B = (~torch.isfinite(adv.token_BT) & (batch.token_turn_BT >= 0)).any(1)
    return {int(b) for b in (bad_turn_B | bad_tok_B).nonzero().flatten()}


def run_estimator(name: str, episodes: list[Episode] | None = None) -> NonfiniteRow:
    """Both runs of the module doc for one estimator."""
    episodes = nonfinite_episodes() if episodes is None else episodes
    needs = dict(getattr(ESTIMATORS[name], "needs", {}) or {})
    trained, _rollouts, metrics = split_for_training(episodes)
    dropped = int(metrics.get("dropped_groups", 0))
    try:
        batch = _pack(trained, needs)
        bad = _nonfinite_rows(batch, compute(name, batch))
        contained, detail = not bad, f"{len(bad)} kept rows have non-finite advantages" if bad else ""
    except Exception as e:  # an estimator that fails on a clean batch is a finding of its own
        contained, detail = False, f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}"
    return NonfiniteRow(name, contained, dropped, _without_drop(name, episodes, needs), detail)


def _without_drop(name: str, episodes: list[Episode], needs: dict[str, Any]) -> str:
    poisoned = {i for i, ep in enumerate(episodes) if any(not math.isfinite(t.reward) for t in ep.turns)}
    groups = {episodes[i].group_id for i in poisoned}
    in_poisoned_groups = {i for i, ep in enumerate(episodes) if ep.group_id in groups}
    try:
        batch = _pack(episodes, needs)
        bad = _nonfinite_rows(batch, compute(name, batch))
    except Exception as e:  # refusing a poisoned batch with an error is an acceptable behaviour
        return f"refused: {type(e).__name__}: {str(e)[:200]}"
    if not bad:
        return "all finite"
    return "spreads" if bad - in_poisoned_groups else "stays in poisoned groups"
