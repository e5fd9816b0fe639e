"""A custom credit estimator in ~30 lines: group-relative outcome with a per-turn discount.

    A[b,k] = gamma^(n_b - 1 - k) * (R[b] - mean of R over b's group)

Earlier turns get less credit for the final outcome. Register it with the decorator and every
trainer can use it by name, exactly like the built-ins:

    python examples/custom_estimator.py          # runs it on a tiny hand-built batch
    creditgym.credit.compute("discounted_center", batch, gamma=0.8)
"""

from __future__ import annotations

import torch

from creditgym import CreditBatch, Episode, Turn
from creditgym.credit import Advantages, compute, describe, make_advantages, register_estimator


@register_estimator("discounted_center", needs={})  # needs: what collection must supply (none here)
def discounted_center(batch: CreditBatch, *, gamma: float = 0.9) -> Advantages:
    """Centred group outcome, discounted by the number of turns left (a toy, not from a paper)."""
    mask = batch.turn_mask_BK
    has = mask.any(1).to(batch.outcome_B.dtype)
    same = (batch.group_B[:, None] == batch.group_B[None, :]).to(has.dtype) * has[None, :]
    baseline_B = (same @ batch.outcome_B) / same.sum(1).clamp(min=1)  # mean outcome of each group
    k = torch.arange(batch.K, device=mask.device)
    turns_left_BK = (mask.sum(1, keepdim=True) - 1 - k).clamp(min=0)
    turn_BK = gamma**turns_left_BK * (batch.outcome_B - baseline_B)[:, None]
    return make_advantages(batch, turn_BK)  # zeroes padding, broadcasts to tokens, adds the metrics


def tiny_batch() -> CreditBatch:
    """Two episodes of one group: a 3-turn success and a 2-turn failure."""

    def turn(reward: float) -> Turn:
        return Turn(obs_ids=(1, 2), action_ids=(3, 4), reward=reward, state_key="s")

    win = Episode(turns=(turn(0), turn(0), turn(1)), group_id="task-7")
    loss = Episode(turns=(turn(0), turn(0)), group_id="task-7")
    return CreditBatch.from_episodes([win, loss])


if __name__ == "__main__":
    batch = tiny_batch()
    print(describe(compute("discounted_center", batch, gamma=0.5), batch))
