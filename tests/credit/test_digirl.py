"""DigiRL's doubly-robust step advantage (METHODS.md 6): worked examples, edge cases, loop vs vectorised."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from creditgym import Episode, Turn
from creditgym.batch import CreditBatch
from creditgym.credit import compute

from .fixtures import credit_batches, loop_tests

test_loop_float64, test_loop_float32 = loop_tests("digirl")


def batch_of(rows: list[tuple[list[float], list[float], bool]]) -> CreditBatch:
    """One episode per row: (rewards, values incl. a bootstrap slot when truncated, truncated)."""
    eps = []
    for i, (rewards, _, truncated) in enumerate(rows):
        turns = tuple(Turn(obs_ids=(1,), action_ids=(2, 3), action_text="a", reward=r, state_key=f"{i}:{k}")
                      for k, r in enumerate(rewards))  # fmt: skip
        eps.append(Episode(turns=turns, group_id=f"g{i}", terminated=not truncated, truncated=truncated))
    batch = CreditBatch.from_episodes(eps)
    V = torch.zeros(batch.B, batch.K)
    for b, (_, values, _) in enumerate(rows):
        V[b, : min(len(values), batch.K)] = torch.tensor(values[: batch.K])
    return batch.with_values(values_BK=V)


def test_worked_example_success_and_failure() -> None:
    """METHODS.md 6: lam 0.5, success at step 3, V = (0.2, 0.3, 0.6) -> A = (0.325, 0.65, 1.0);
    failure, V = (0.2, 0.1, 0.4) -> A = (-0.075, 0.15, 0.0): only step 2 is imitated."""
    batch = batch_of([([0, 0, 1], [0.2, 0.3, 0.6], False), ([0, 0, 0], [0.2, 0.1, 0.4], False)])
    adv = compute("digirl", batch, lam=0.5)
    torch.testing.assert_close(adv.turn_BK, torch.tensor([[0.325, 0.65, 1.0], [-0.075, 0.15, 0.0]]))
    assert (adv.turn_BK[1] > 0).tolist() == [False, True, False]
    # token advantages broadcast the step's value to its two action tokens
    assert adv.token_BT[0][batch.loss_mask_BT[0]].tolist() == pytest.approx([0.325, 0.325, 0.65, 0.65, 1.0, 1.0])


def test_terminal_value_is_zero_and_truncation_bootstraps() -> None:
    # a terminated episode has no slot after its last turn (V = 0 there); a truncated one bootstraps
    term = batch_of([([0, 0], [0.5, 0.5, 0.9], False)])
    trunc = batch_of([([0, 0], [0.5, 0.5, 0.9], True)])
    a_term = compute("digirl", term, lam=0.5).turn_BK[0, :2]
    a_trunc = compute("digirl", trunc, lam=0.5).turn_BK[0, :2]
    # h=1 (last): lam^0 = 1 -> r_H = 0 in both; h=0: 0.5 * 0 + 0.5 * (0.5 - 0.5) = 0
    torch.testing.assert_close(a_term, torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(a_trunc, torch.tensor([0.0, 0.0]))
    # the last step always carries r_H (weight lam^0 = 1); the released form reads the bootstrap slot:
    # truncated h=1: clamp(0.9 - 0.5 - 0.05 + 0, 0, 1) = 0.35; terminated: clamp(0 - 0.5 - 0.05) = 0
    rel_term = compute("digirl", term, lam=0.5, variant="release").turn_BK[0, :2]
    rel_trunc = compute("digirl", trunc, lam=0.5, variant="release").turn_BK[0, :2]
    torch.testing.assert_close(rel_term, torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(rel_trunc, torch.tensor([0.0, 0.35]))


def test_release_variant_clamps_to_unit_interval() -> None:
    """Release: clamp(V(s') - V(s) - 0.05 + r + MC_lam, 0, 1); success V = (0.2, 0.3, 0.6), lam 0.5:
    MC = (0.25, 0.5, 1.0) -> (0.3, 0.75, 1.0); failure V = (0.2, 0.1, 0.4) -> (0, 0.25, 0)."""
    batch = batch_of([([0, 0, 1], [0.2, 0.3, 0.6], False), ([0, 0, 0], [0.2, 0.1, 0.4], False)])
    adv = compute("digirl", batch, lam=0.5, variant="release")
    torch.testing.assert_close(adv.turn_BK, torch.tensor([[0.3, 0.75, 1.0], [0.0, 0.25, 0.0]]))


def test_missing_values_and_bad_knobs_raise() -> None:
    batch = CreditBatch.from_episodes([Episode(turns=(Turn(obs_ids=(1,), action_ids=(2,), reward=1.0),))])
    with pytest.raises(ValueError, match="step values"):
        compute("digirl", batch)
    with pytest.raises(ValueError, match="lam"):
        compute("digirl", batch.with_values(values_BK=torch.zeros(1, 1)), lam=1.5)


@settings(max_examples=20)
@given(batch=credit_batches())
def test_lam_one_is_the_outcome_and_lam_zero_the_td_error(batch: CreditBatch) -> None:
    """Property: lam = 1 gives every step the final reward r_H; lam = 0 gives every step before the
    last the one-step TD error (the last step keeps r_H)."""
    mask = batch.turn_mask_BK
    n_B = mask.sum(1)
    rH_B = torch.gather(batch.rewards_BK, 1, (n_B - 1).clamp(min=0)[:, None]).squeeze(1)
    a1 = compute("digirl", batch, lam=1.0).turn_BK
    torch.testing.assert_close(a1, torch.where(mask, rH_B[:, None].expand_as(a1), torch.zeros_like(a1)))
    a0 = compute("digirl", batch, lam=0.0).turn_BK
    V = batch.values_BK
    assert V is not None
    for b in range(batch.B):
        for k in range(int(n_B[b])):
            if k == int(n_B[b]) - 1:
                expect = float(rH_B[b])
            else:
                expect = float(batch.rewards_BK[b, k]) + float(V[b, k + 1]) - float(V[b, k])
            assert float(a0[b, k]) == pytest.approx(expect, abs=1e-9)
