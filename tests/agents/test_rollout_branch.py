"""Collector.branch: replay forks that reuse the recorded prefix tokens and share prefix node ids."""

from __future__ import annotations

import creditgym_test_rollout_fakes as F  # loaded by tests/agents/conftest.py
import numpy as np
import pytest
import torch

from creditgym import CreditBatch
from creditgym.agents import Collector, Sampling, ScriptedPolicy
from creditgym.token_batch import prefix_node_ids

GUESS = "GuessNumber-v0"


def _collector(rec, **kw):
    return Collector(rec, GUESS, sampling=Sampling(max_new_tokens=12), **kw)


@pytest.fixture(scope="module")
def base():
    rec = F.Recording(F.TorchBytePolicy(seed=5, eos_bias=1.0))
    col = _collector(rec, group_size=2)
    eps = col.collect(2, seed=1)
    return rec, col, eps


def test_branch_every_turn_reuses_prefix_and_shares_nodes(base):
    rec, col, eps = base
    branches = col.branch(eps, "all", 2)
    assert len(branches) == 2 * sum(e.num_turns for e in eps)
    by_id = {e.episode_id: e for e in eps}
    for br in branches:
        orig = by_id[br.meta["branch_of"]]
        k = br.meta["branch_at"]
        assert br.group_id == orig.group_id and br.seed == orig.seed and br.task_id == orig.task_id
        assert br.turns[:k] == orig.turns[:k]
        assert br.turns[k].obs_ids == orig.turns[k].obs_ids and br.turns[k].obs_text == orig.turns[k].obs_text
        key = f"{orig.group_id}\x00{orig.role}"
        assert br.node_ids == prefix_node_ids(key, [t.action_ids for t in br.turns])
        assert br.node_ids[:k] == prefix_node_ids(key, [t.action_ids for t in orig.turns[:k]])
        assert br.terminated != br.truncated and "greedy_return" not in br.meta
    # the recorded contexts of the branch turns are exactly their token prefixes
    seen = {tuple(c[0]) for c in rec.calls}
    for br in branches:
        ctx = []
        for t in br.turns:
            ctx += t.obs_ids
            assert tuple(ctx) in seen
            ctx += t.action_ids
    # packing derives the originals' node ids the same way, so shared prefixes share packed ids
    batch = CreditBatch.from_episodes([*eps, *branches])
    row = {e.episode_id: i for i, e in enumerate([*eps, *branches])}
    for br in branches:
        k, b0, b1 = br.meta["branch_at"], row[br.meta["branch_of"]], row[br.episode_id]
        assert torch.equal(batch.node_BK[b0, :k], batch.node_BK[b1, :k])
        if k < by_id[br.meta["branch_of"]].num_turns and br.turns[k].action_ids != by_id[br.meta["branch_of"]].turns[k].action_ids:
            assert batch.node_BK[b0, k] != batch.node_BK[b1, k]


def test_branch_explicit_turns_and_per_episode_lists(base):
    _, col, eps = base
    assert len(col.branch(eps, [0], 1)) == len(eps)
    lists = [[e.num_turns - 1] for e in eps]
    out = col.branch(eps, lists, 3)
    assert len(out) == 3 * len(eps)
    assert all(b.meta["branch_at"] == next(e for e in eps if e.episode_id == b.meta["branch_of"]).num_turns - 1 for b in out)
    assert col.branch(eps, [99], 2) == [] and col.branch(eps, "all", 0) == []
    with pytest.raises(ValueError, match="at_turns"):
        col.branch(eps, "sometimes", 1)


def test_branch_tree_and_needs_dispatch(base):
    _, col, eps = base
    long = [e for e in eps if e.num_turns >= 3]
    if not long:
        pytest.skip("no episode with 3 turns")
    tree = col.branch_tree(long, n=2, depth=2)
    expected = 0
    frontier = list(long)
    for d in (1, 2):
        grown = [e for e in tree if e.meta["branch_at"] == d]
        assert len(grown) == sum(1 for e in frontier if e.num_turns > d)
        frontier += grown
        expected += len(grown)
    assert len(tree) == expected
    assert len(col.branch_for(long, {"at": "every_turn", "n": 1})) == sum(e.num_turns for e in long)
    with pytest.raises(ValueError, match="every_turn"):
        col.branch_for(long, {"at": "random"})


class DriftEnv(F.GuessNumberEnv):
    """Breaks determinism: observations carry a global counter."""

    count = 0

    def _apply(self, parsed):
        DriftEnv.count += 1
        out = super()._apply(parsed)
        return F.Outcome(out.obs + f" ({DriftEnv.count})", out.reward, out.terminated, out.info)


def test_branch_detects_nondeterministic_env():
    col = Collector(ScriptedPolicy.for_env(GUESS), env_fns=[lambda: DriftEnv(high=1000)])
    eps = col.collect(1, seed=0)
    assert eps[0].num_turns >= 2
    with pytest.raises(ValueError, match="determinism"):
        col.branch(eps, [1], 1)


def test_branch_uses_seeded_sampling():
    a = _collector(F.TorchBytePolicy(seed=5, eos_bias=1.0), group_size=2)
    eps = a.collect(1, seed=3)
    x = a.branch(eps, "all", 2)
    b = _collector(F.TorchBytePolicy(seed=5, eos_bias=1.0), group_size=2)
    y = b.branch(b.collect(1, seed=3), "all", 2)
    assert [[t.action_ids for t in e.turns] for e in x] == [[t.action_ids for t in e.turns] for e in y]
    assert len({tuple(t.action_ids for t in e.turns) for e in x}) > 1
    np.testing.assert_array_equal([e.meta["branch_at"] for e in x], [e.meta["branch_at"] for e in y])


class LiveBackendEnv(F.GuessNumberEnv):
    """Each step asks a 'live' backend whose answers change between calls (a global counter)."""

    calls = 0

    def _apply(self, parsed):
        def live():
            LiveBackendEnv.calls += 1
            return LiveBackendEnv.calls

        n = self.call_backend("count", {"guess": parsed.args["n"]}, live)
        out = super()._apply(parsed)
        return F.Outcome(out.obs + f" [backend {n}]", out.reward, out.terminated, out.info)


def test_branch_replays_live_backends_from_the_episode_log():
    col = Collector(ScriptedPolicy.for_env(GUESS), env_fns=[lambda: LiveBackendEnv(high=1000)])
    eps = col.collect(1, seed=0)
    assert eps[0].num_turns >= 3 and len(eps[0].meta["backend_log"]) == eps[0].num_turns
    for env in col.pool.envs:
        env.unwrapped._backend_lru.clear()  # only the episode's own log can answer the replay now
    branches = col.branch(eps, [2], 1)
    assert branches[0].turns[:2] == eps[0].turns[:2]
    assert branches[0].turns[2].obs_text == eps[0].turns[2].obs_text
