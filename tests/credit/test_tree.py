"""Prefix-tree estimators (CREDIT.md 6): tree (TEMPO, TreeRL) and tree_grpo."""

from __future__ import annotations

import torch
from hypothesis import given

from creditgym.credit import compute

from .fixtures import (
    close,
    credit_batches,
    distinct_ids,
    few,
    fixture_F_test,
    group_sizes,
    loop_tests,
    replace,
)

# ---------------------------------------------------------------- worked examples (fixture F, CREDIT.md 1.7, 6)
F_EXPECTED = [
    ("tree", {}, [[1, 1.5, 1], [-1, -1], [0, -0.5, 0], [0.7071, 0.7071], [-0.7071]]),
    ("tree", {"form": "treerl"}, [[0.3536, 0.75, 0.5], [-1, -0.5], [0.3536, -0.25, 0], [1, 0.5], [-1]]),
    ("tree_grpo", {}, [[1.7071] * 3, [-1] * 2, [-0.7071] * 3, [0.7071] * 2, [-0.7071]]),
]  # fmt: skip


test_fixture_F = fixture_F_test(F_EXPECTED)


# ---------------------------------------------------------------- loop reference vs vectorised (CREDIT.md 9.1)
test_loop_reference_matches_vectorized_float64, test_loop_reference_matches_vectorized_float32 = loop_tests(
    "tree", "tree_grpo"
)


# ---------------------------------------------------------------- properties (CREDIT.md 9.3)
@few
@given(batch=credit_batches())
def test_tree_reductions(batch) -> None:
    flat = replace(batch, node_BK=distinct_ids(batch))
    grpo = compute("grpo", batch).turn_BK
    torch.testing.assert_close(compute("tree", flat).turn_BK, grpo, **close)
    torch.testing.assert_close(compute("tree", flat, leaf="raw").turn_BK, compute("dr_grpo", batch).turn_BK, **close)
    torch.testing.assert_close(compute("tree", batch, beta=0.0).turn_BK, grpo, **close)
    torch.testing.assert_close(compute("tree_grpo", flat).turn_BK, grpo, **close)
    one_tree = replace(batch, node_BK=torch.where(batch.turn_mask_BK, batch.group_B[:, None] * 0 + 10**6 + batch.group_B[:, None], -1))
    one_tree = replace(one_tree, node_BK=torch.where(torch.arange(batch.K)[None, :] == 0, one_tree.node_BK, distinct_ids(batch)))
    big = (group_sizes(batch) >= 2)[:, None] & batch.turn_mask_BK
    torch.testing.assert_close(compute("tree_grpo", one_tree).turn_BK[big], 2 * grpo[big], atol=1e-6, rtol=1e-6)
