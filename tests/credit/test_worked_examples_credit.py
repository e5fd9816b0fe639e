"""CREDIT.md worked examples: fixture F (1.7) and the per-section examples, numbers copied by hand."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from creditgym.batch import CreditBatch
from creditgym.credit import broadcast_to_tokens, compute

from .fixtures import fixture_F

ATOL = 1e-4


def rows(adv_BK: torch.Tensor, batch: CreditBatch) -> list[list[float]]:
    n_B = batch.turn_mask_BK.sum(1).tolist()
    return [row[:n] for row, n in zip(adv_BK.tolist(), n_B)]


def assert_rows(adv_BK: torch.Tensor, batch: CreditBatch, expected: list[list[float]]) -> None:
    got = rows(adv_BK, batch)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, abs=ATOL), (got, expected)


F_EXPECTED = [
    ("grpo", {}, [[1, 1, 1], [-1, -1], [0, 0, 0], [0.7071, 0.7071], [-0.7071]]),
    ("dr_grpo", {}, [[0.5, 0.5, 0.5], [-0.5, -0.5], [0, 0, 0], [0.5, 0.5], [-0.5]]),
    ("rloo", {}, [[0.75, 0.75, 0.75], [-0.75, -0.75], [0, 0, 0], [1, 1], [-1]]),
    ("reinforce++", {}, [[1.2925, 1.2925, 0.2770], [-0.7385, -1.7541], [0.2770] * 3, [0.2770] * 2, [-1.7541]]),
    ("reinforce++", {"stats": "turn"},
     [[1.2613, 1.2613, 0.2703], [-0.7207, -1.7118], [0.2703] * 3, [0.2703] * 2, [-1.7118]]),
    ("reinforce++_baseline", {}, [[0.9594] * 3, [-1.3858] * 2, [-0.2132] * 3, [0.9594] * 2, [-1.3858]]),
    ("reinforce++_baseline", {"stats": "turn"},
     [[0.9363] * 3, [-1.3524] * 2, [-0.2081] * 3, [0.9363] * 2, [-1.3524]]),
    ("gae", {"level": "turn", "lam": 0.5, "whiten": False},
     [[0.375, 0.25, 0], [-0.125, -0.25], [0.0625, -0.375, 0.25], [0.5, 0], [-0.5]]),
    ("gae", {"level": "turn", "lam": 0.5},
     [[1.1687, 0.7606, -0.0557], [-0.4638, -0.8719], [0.1484, -1.2800, 0.7606], [1.5768, -0.0557], [-1.6881]]),
    ("turn_return", {"gamma": 0.5},
     [[0.5774, 1, 0], [0.5774, -1], [-1.1547, 0, 0], [0.7071, 0], [-0.7071]]),
    ("turn_return", {"gamma": 0.5, "norm": "pooled"},
     [[-0.2490, 1.0791, 1.0791], [-0.2490, -1.5771], [-0.9131, -0.2490, 1.0791], [0, 1], [-1]]),
    ("mt_grpo", {}, [[0, 1.2845, 0.5774], [0, -1.1547], [0, -0.1298, 0.5774], [0.7071, 0.7071], [-0.7071]]),
    ("mt_grpo", {"mode": "cae"},
     [[1, 0.7071, 0.5774], [-1, -1.1547], [0, -0.7071, 0.5774], [0, 0.7071], [-0.7071]]),
    ("a2tgpo", {}, [[0.6523, 1.2071, 1], [0.1094, -1], [-0.7416, -0.5, 0], [0.5, 0.7071], [-0.7071]]),
    ("rebn", {},
     [[1.0142, 1.3211, 0.4443], [-0.6516, -1.7475], [0.0279, 0.2252, 0.4443], [0.2252, 0.4443], [-1.7475]]),
    ("gigpo", {"gamma": 0.5},
     [[0.5208, 0.9375, 0.4375], [-0.4792, -1.0625], [-0.2292, -0.0625, -0.0625], [0.5833, 0.3333], [-0.9167]]),
    ("gigpo", {"gamma": 0.5, "episode_stats": "episodes"},
     [[0.5833, 1, 0.5], [-0.4167, -1], [-0.1667, 0, 0], [0.75, 0.5], [-0.75]]),
    ("gigpo", {"gamma": 0.5, "norm": "std"},
     [[1.6258, 2.0485, 1.0485], [-0.7707, -2.3481], [-1.3045, -0.1498, -0.1498], [1.2845, 0.5773], [-1.8618]]),
    ("tree", {}, [[1, 1.5, 1], [-1, -1], [0, -0.5, 0], [0.7071, 0.7071], [-0.7071]]),
    ("tree", {"form": "treerl"}, [[0.3536, 0.75, 0.5], [-1, -0.5], [0.3536, -0.25, 0], [1, 0.5], [-1]]),
    ("tree_grpo", {}, [[1.7071] * 3, [-1] * 2, [-0.7071] * 3, [0.7071] * 2, [-0.7071]]),
    ("vineppo", {}, [[0.25, 0.25, 0], [0, -0.5], [0.25, -0.5, 0.25], [0.5, 0], [-0.5]]),
    ("vineppo", {"bootstrap_truncated": True}, [[0.25, 0.25, 0], [0, -0.25], [0.25, -0.5, 0.25], [0.5, 0], [-0.5]]),
    ("spo", {}, [[0.25, 0.25, 0], [0, -0.5], [0.25, -0.5, 0.25], [0.5, 0], [-0.5]]),
    ("spo", {"variant": "tree"}, [[0.25, 0.25, 0], [-0.5, 0], [0.25, -0.25, 0], [0.5, 0], [-0.5]]),
    ("igpo", {}, [[0.9972, 1.7949, 1.9943], [-0.5983, 0], [-0.3989, 0.3989, 0.9972], [0.8444, 1.1043], [-0.8444]]),
    ("igpo", {"norm": "separate"}, [[1.8165, 2.6330, 1], [-1, -1], [-0.8165, 0, 0], [0.7071, 0.7071], [-0.7071]]),
]  # fmt: skip


@pytest.mark.parametrize("name,cfg,expected", F_EXPECTED, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(F_EXPECTED)])
def test_fixture_F(name, cfg, expected) -> None:
    F = fixture_F()
    adv = compute(name, F, **cfg)
    assert_rows(adv.turn_BK, F, expected)
    if name not in ("reinforce++",):  # reinforce++ writes token_BT itself; equal here since gamma = 1
        torch.testing.assert_close(adv.token_BT, broadcast_to_tokens(adv.turn_BK, F.token_turn_BT, F.loss_mask_BT))


def test_fixture_F_grpo_metrics() -> None:
    m = compute("grpo", fixture_F()).metrics
    assert m["adv/frac_zero_tokens"] == pytest.approx(6 / 22, abs=ATOL)
    assert m["adv/turn0/mean"] == pytest.approx(0, abs=ATOL)
    assert m["adv/turn0/std"] == pytest.approx(0.8660, abs=ATOL)
    assert m["adv/turn1/mean"] == pytest.approx(0.1768, abs=ATOL)
    assert m["adv/turn1/std"] == pytest.approx(0.8898, abs=ATOL)
    assert m["adv/turn2/mean"] == pytest.approx(0.5, abs=ATOL)
    assert m["adv/turn2/std"] == pytest.approx(0.7071, abs=ATOL)
    assert m["groups/frac_all_equal"] == 0
    assert m["groups/num"] == 2 and m["batch/frac_truncated"] == pytest.approx(0.2)
    assert m["batch/mean_turns"] == pytest.approx(11 / 5)
    assert "adv/turn3/mean" not in m


def test_fixture_F_gigpo_metrics() -> None:
    m = compute("gigpo", fixture_F(), gamma=0.5).metrics
    assert m["gigpo/anchor_size_frac/1"] == pytest.approx(0.2)
    assert m["gigpo/anchor_size_frac/2"] == pytest.approx(0.4)
    assert m["gigpo/anchor_size_frac/3"] == pytest.approx(0.4)
    assert m["gigpo/anchor_size_frac/9+"] == 0
    assert m["gigpo/frac_steps_singleton"] == pytest.approx(1 / 11, abs=ATOL)


def test_fixture_F_a2tgpo_clip_scale() -> None:
    F = fixture_F()
    adv = compute("a2tgpo", F)
    expected = [[0.9157, 1.1019, 1.1386], [1.1562, 0.8614], [0.9157, 0.8981, 1], [1, 1.1019], [0.8981]]
    assert_rows(adv.clip_scale_BK, F, expected)
    assert bool((adv.clip_scale_BK[~F.turn_mask_BK] == 1).all())


def test_fixture_F_gae_whiten_stats() -> None:
    """Whitened = (raw - 0.017045) / 0.306297 over the 22 tokens (CREDIT.md 3)."""
    F = fixture_F()
    raw = compute("gae", F, level="turn", lam=0.5, whiten=False)
    white = compute("gae", F, level="turn", lam=0.5)
    expect = (raw.turn_BK - 0.017045) / 0.306297
    torch.testing.assert_close(white.turn_BK[F.turn_mask_BK], expect[F.turn_mask_BK], atol=ATOL, rtol=0)
    torch.testing.assert_close(white.returns_BK, raw.returns_BK)


def test_remax_example() -> None:
    F = dataclasses.replace(fixture_F(), greedy_return_B=torch.ones(5))
    assert_rows(compute("remax", F).turn_BK, F, [[0.5] * 3, [-0.5] * 2, [0] * 3, [0] * 2, [-1]])


def test_broadcast_example() -> None:
    """CREDIT.md 1.5."""
    tt = torch.tensor([[-1, 0, 0, -1, 1, 1]])
    lm = torch.tensor([[0, 1, 0, 0, 1, 1]], dtype=torch.bool)
    out = broadcast_to_tokens(torch.tensor([[0.5, -2.0]]), tt, lm)
    assert out.tolist() == [[0, 0.5, 0, 0, -2, -2]]


def one_episode(truncated: bool, values: list[float], K: int) -> CreditBatch:
    """Tokens [a, b, obs, c, d], token_turn [0,0,-1,1,1], rewards [0, 1] (CREDIT.md 3 examples)."""
    tt = torch.tensor([[0, 0, -1, 1, 1]])
    rewards = torch.zeros(1, K)
    rewards[0, :2] = torch.tensor([0.0, 1.0])
    mask = torch.zeros(1, K, dtype=torch.bool)
    mask[0, :2] = True
    ids = torch.full((1, K), -1)
    ids[0, :2] = torch.tensor([0, 1])
    v = torch.zeros(1, K)
    v[0, : len(values)] = torch.tensor(values)
    return CreditBatch(
        rewards_BK=rewards,
        turn_mask_BK=mask,
        outcome_B=torch.tensor([1.0]),
        group_B=torch.tensor([0]),
        state_BK=ids,
        node_BK=ids.clone(),
        terminated_B=torch.tensor([not truncated]),
        truncated_B=torch.tensor([truncated]),
        token_turn_BT=tt,
        loss_mask_BT=tt >= 0,
        values_BK=v,
        token_values_BT=torch.tensor([[0.5, 0.4, 0.0, 0.9, 0.6]]),
    )


def test_gae_token_level_examples() -> None:
    b = one_episode(False, [], 2)
    adv = compute("gae", b, gamma=1.0, lam=0.5, whiten=False)
    assert adv.token_BT[0].tolist() == pytest.approx([0.125, 0.45, 0, -0.1, 0.4], abs=1e-6)
    assert adv.turn_BK[0].tolist() == pytest.approx([0.125, -0.1], abs=1e-6)
    bt = one_episode(True, [0, 0, 0.5], 3)
    adv = compute("gae", bt, gamma=1.0, lam=0.5, whiten=False)
    assert adv.token_BT[0].tolist() == pytest.approx([0.1875, 0.575, 0, 0.15, 0.9], abs=1e-6)


def test_gae_hierarchical_example() -> None:
    b = one_episode(False, [0.5, 0.9], 2)
    adv = compute("gae", b, level="hierarchical", gamma=1.0, lam=1.0, lam_token=0.5, whiten=False)
    assert adv.token_BT[0].tolist() == pytest.approx([0.2, 0.6, 0, -0.1, 0.4], abs=1e-6)
    assert adv.turn_BK[0].tolist() == pytest.approx([0.5, 0.1], abs=1e-6)
    assert adv.returns_BK[0].tolist() == pytest.approx([1, 1], abs=1e-6)


def _rows_batch(rewards: list[list[float]], probe: list[list[float]] | None = None,
                outcome: list[float] | None = None) -> CreditBatch:  # fmt: skip
    """One group, one observation token and one action token per turn."""
    B, K = len(rewards), max(len(r) for r in rewards)
    r = torch.zeros(B, K)
    mask = torch.zeros(B, K, dtype=torch.bool)
    ids = torch.full((B, K), -1)
    tt = torch.full((B, 2 * K), -1)
    p = torch.zeros(B, K + 1)
    for b, row in enumerate(rewards):
        n = len(row)
        r[b, :n], mask[b, :n] = torch.tensor(row), True
        ids[b, :n] = torch.arange(n) + 10 * b
        tt[b, 1 : 2 * n : 2] = torch.arange(n)
        if probe is not None:
            p[b, : n + 1] = torch.tensor(probe[b])
    return CreditBatch(
        rewards_BK=r,
        turn_mask_BK=mask,
        outcome_B=torch.tensor(outcome) if outcome is not None else r.sum(1),
        group_B=torch.zeros(B, dtype=torch.int64),
        state_BK=ids,
        node_BK=ids.clone(),
        terminated_B=torch.ones(B, dtype=torch.bool),
        truncated_B=torch.zeros(B, dtype=torch.bool),
        token_turn_BT=tt,
        loss_mask_BT=tt >= 0,
        probe_BK1=p if probe is not None else None,
    )


def test_pure_example_P() -> None:
    P = _rows_batch([[0.8, -0.6, 0.9], [0.7, 0.9, 0.5], [0.2, 0.4]])
    soft = compute("pure", P, temperature=0.1)
    assert_rows(soft.turn_BK, P, [[-1.0328, -0.8885, -0.1443], [0.6619, 0.5358, 0.4775], [0.2472, 0.0594]])
    exact = compute("pure", P, form="exact")
    assert_rows(exact.turn_BK, P, [[-0.95, -0.95, 0.55], [0.7] * 3, [0.25, 0.45]])


def test_siop_example_S() -> None:
    phi = [[-1, -0.6, -0.2], [-1, -0.9, -1.1], [-1.2, -0.4, -0.3]]
    S = _rows_batch([[0, 0]] * 3, probe=phi, outcome=[0.5, 0.5, 0.25])
    adv = compute("siop", S)
    assert_rows(adv.turn_BK, S, [[1.0160, 0.9199], [-1.9496, -1.0572], [0.9336, -0.4805]])
