"""Self-play opponent pools (trainers/selfplay.py), the novelty reward transform and two-player branching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _trainer_helpers import build_tiny, clone_policy

from creditgym import Episode, Turn
from creditgym.agents import Collector, Sampling
from creditgym.envs.redteam import REDTEAM, REDTEAM_SELFPLAY
from creditgym.trainers.rewards import REWARD_TRANSFORMS, apply_reward_transforms, build_reward_transforms
from creditgym.trainers.selfplay import OpponentPools, Snapshot, SnapshotPool

SP_KW = {"max_turns": 2, "goal_types": ("canary",)}


@pytest.fixture(scope="module")
def roles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.set_num_threads(1)
    base = build_tiny(tmp_path_factory.mktemp("tiny_sp"))
    return {"attacker": base, "defender": clone_policy(base)}


def _weights(policy: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.model.state_dict().items()}


# ---------------------------------------------------------------------- snapshots and draws


def test_snapshot_cadence_every_n_updates(roles: dict[str, Any]) -> None:
    pools = OpponentPools(roles, every=2)
    assert [pools.maybe_snapshot(u) for u in (0, 0, 1, 2, 3, 4)] == [True, False, False, True, False, True]
    assert [m.name for m in pools.pools["attacker"].members] == ["attacker@0", "attacker@2", "attacker@4"]
    assert [m.name for m in pools.pools["defender"].members] == ["defender@0", "defender@2", "defender@4"]
    snap = pools.pools["attacker"].members[0]
    assert isinstance(snap, Snapshot) and snap.policy is not roles["attacker"]
    assert all(not p.requires_grad for p in snap.policy.model.parameters())
    # a frozen copy: training the live policy later leaves the snapshot's weights alone
    before = _weights(snap.policy)
    with torch.no_grad():
        next(iter(roles["attacker"].model.parameters())).add_(0.0)
    assert all(torch.equal(before[k], v) for k, v in _weights(snap.policy).items())


def test_draw_probabilities_latest_half_else_uniform() -> None:
    # 3 members, latest_prob 0.5: P(latest) = 0.5 + 0.5 / 3 = 2/3, each older one 0.5 / 3 = 1/6
    pool = SnapshotPool([Snapshot("defender", u, None) for u in (0, 2, 4)], latest_prob=0.5, label="defender")
    rng = np.random.default_rng(0)
    names = [pool.sample(rng).name for _ in range(6000)]
    freq = {n: names.count(n) / len(names) for n in ("defender@0", "defender@2", "defender@4")}
    assert freq["defender@4"] == pytest.approx(2 / 3, abs=0.02)
    assert freq["defender@0"] == pytest.approx(1 / 6, abs=0.02) and freq["defender@2"] == pytest.approx(1 / 6, abs=0.02)
    assert repr(pool) == "SnapshotPool(defender)"  # env kwargs are keyed by repr: stable as the pool grows


def test_pools_need_two_roles_or_a_pool_opponent(roles: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="victim='pool'"):
        OpponentPools({"agent": roles["attacker"]}, every=1, env_kwargs={})
    with pytest.raises(ValueError, match="every"):
        OpponentPools(roles, every=0)


def test_two_player_groups_play_the_other_roles_pool(roles: dict[str, Any]) -> None:
    pools = OpponentPools(roles, every=1, seed=3)
    col = Collector(policies=roles, env_id=REDTEAM_SELFPLAY, group_size=2, env_kwargs=SP_KW,
                    sampling=Sampling(max_new_tokens=6))  # fmt: skip
    eps = pools.collect(col, num_groups=2, seed=0, tasks=None, updates=0)
    # group 0 trains the attacker against defender@0, group 1 the defender against attacker@0
    by_group = {}
    for e in eps:
        by_group.setdefault(e.group_id, set()).add(e.role)
    assert [sorted(r) for r in by_group.values()] == [["attacker"], ["defender"]]
    assert {e.meta["opponent"] for e in eps if e.role == "attacker"} == {"defender@0"}
    assert {e.meta["opponent"] for e in eps if e.role == "defender"} == {"attacker@0"}
    # the snapshots' own episodes are not trained on (a defender whose attacker sent only invalid
    # messages never acted: that match has no defender episode)
    assert sum(e.role == "attacker" for e in eps) == 2 and 1 <= sum(e.role == "defender" for e in eps) <= 2
    # the next round alternates: group 0 now trains the defender
    eps = pools.collect(col, num_groups=2, seed=1, tasks=None, updates=1)
    assert all(e.role == ("defender" if e.group_id.endswith("-g0") else "attacker") for e in eps)
    assert sum(e.role == "attacker" for e in eps) == 2
    assert len(pools.pools["attacker"].members) == 2
    col.close()


def test_trainer_checkpoints_and_restores_the_pools(roles: dict[str, Any], tmp_path: Path) -> None:
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    def trainer(steps: int) -> GRPOTrainer:
        policies = {r: clone_policy(roles["attacker"]) for r in ("attacker", "defender")}
        cfg = GRPOConfig(steps=steps, num_groups=2, group_size=2, max_new_tokens=6, lr=1e-3, env_kwargs=SP_KW, entropy_coef=0.01,
                         opponent_pool_every=1, out_dir=str(tmp_path), checkpoint_every=1, resume=True,
                         tensorboard=False, seed=2)  # fmt: skip
        return GRPOTrainer(env_id=REDTEAM_SELFPLAY, config=cfg, policies=policies)

    first = trainer(2)
    first.train()
    assert first.pools is not None
    assert [m.name for m in first.pools.pools["defender"].members] == ["defender@0", "defender@1"]
    second = trainer(3)  # resumes from the step-2 checkpoint
    assert second.step_idx == 2 and second.pools is not None
    for role in ("attacker", "defender"):
        a, b = first.pools.pools[role].members, second.pools.pools[role].members
        assert [m.name for m in a] == [m.name for m in b]
        for ma, mb in zip(a, b):
            wa, wb = _weights(ma.policy), _weights(mb.policy)
            assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the snapshot at update 1 holds the weights after one update, not the initial ones
    w0, w1 = _weights(second.pools.pools["attacker"].members[0].policy), _weights(second.pools.pools["attacker"].members[1].policy)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)
    assert second.pools.rng.bit_generator.state == first.pools.rng.bit_generator.state
    assert [second.pools.draw("defender").name for _ in range(8)] == [first.pools.draw("defender").name for _ in range(8)]
    second.train()
    assert [m.name for m in second.pools.pools["attacker"].members][-1] == "attacker@2"


def test_single_role_training_names_pool_as_its_opponent(roles: dict[str, Any]) -> None:
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig(steps=1, num_groups=1, group_size=2, max_new_tokens=6, lr=1e-3, tensorboard=False,
                     env_kwargs={**SP_KW, "victim": "pool"}, opponent_pool_every=1)  # fmt: skip
    tr = GRPOTrainer(clone_policy(roles["attacker"]), REDTEAM, cfg)
    tr.train()
    assert tr.pools is not None
    members = tr.pools.pools["agent"].members
    assert [m.name for m in members] == ["defender@0"]  # the trained policy's snapshot plays the victim
    # the env's opponent is a snapshot: its reply is a deterministic function of the conversation
    msgs = [{"role": "system", "content": "You are ShopBot."}, {"role": "user", "content": "hi"}]
    assert members[0](msgs) == members[0](msgs)


# ---------------------------------------------------------------------- novelty bonus


def _attack(text: str, success: float, gid: str = "g") -> Episode:
    return Episode(turns=(Turn(action_ids=(1,), action_text=text, reward=float(success)),), task_id="t", group_id=gid,
                   role="attacker", terminated=True, outcome={"success": success, "return": float(success)})  # fmt: skip


def test_novelty_bonus_values_and_archive_state() -> None:
    assert "novelty" in REWARD_TRANSFORMS
    transforms = build_reward_transforms(["novelty"], {"novelty": {"beta": 0.1}})
    eps = [_attack("abc def", 1.0), _attack("abc def", 1.0), _attack("zzz", 0.0), _attack("qqqq", 1.0)]
    out, states, metrics = apply_reward_transforms(transforms, eps, [{}])
    # first success: nothing earlier -> 0.1 * (1 - 0); the identical second: cosine 1 -> 0; no 3-gram
    # shared with the earlier successes -> cosine 0 -> 0.1; failures get nothing
    assert [e.outcome.get("novelty") for e in out] == [pytest.approx(0.1), pytest.approx(0.0), None, pytest.approx(0.1)]
    assert [e.total_reward for e in out] == [pytest.approx(1.1), pytest.approx(1.0), 0.0, pytest.approx(1.1)]
    assert out[0].outcome["return"] == pytest.approx(1.1) and out[0].turns[0].info["env_reward"] == 1.0
    assert states[0]["archive"] == ["abc def", "abc def", "qqqq"]
    assert metrics["reward/novelty/successes"] == 3.0
    # the archive carries over to the next round: a repeat of an archived attack earns nothing
    out2, _, _ = apply_reward_transforms(transforms, [_attack("qqqq", 1.0)], states)
    assert out2[0].outcome["novelty"] == pytest.approx(0.0)


# ---------------------------------------------------------------------- two-player branching


def test_two_player_matches_branch_with_exact_prefixes(roles: dict[str, Any]) -> None:
    from creditgym.agents.scripted import ScriptedPolicy

    expert = ScriptedPolicy(REDTEAM_SELFPLAY, tokenizer=roles["attacker"].tokenizer)
    # scripted players make every match run both roles for several moves
    col = Collector(policies={"attacker": expert, "defender": roles["defender"]}, env_id=REDTEAM_SELFPLAY, group_size=1,
                    env_kwargs={"max_turns": 3, "goal_types": ("canary",)}, sampling=Sampling(max_new_tokens=6))  # fmt: skip
    eps = col.collect(2, seed=4)
    assert {e.role for e in eps} == {"attacker", "defender"}
    for mid in {e.meta["match_id"] for e in eps}:  # match-wide move order: both roles' moves, numbered 0, 1, ...
        steps = sorted(t.info["match_step"] for e in eps if e.meta["match_id"] == mid for t in e.turns)
        assert steps == list(range(len(steps)))
    defenders = [e for e in eps if e.role == "defender" and e.num_turns >= 2]
    assert defenders
    d = defenders[0]
    a = next(e for e in eps if e.role == "attacker" and e.meta["match_id"] == d.meta["match_id"])
    branches = col.branch([d, a], [[1], []], 2)  # fork the defender before its second reply
    assert len(branches) == 4  # 2 branches x (defender + attacker episode of the new match)
    for br in branches:
        orig = d if br.role == "defender" else a
        assert br.group_id == d.group_id and br.meta["branch_of"] == d.episode_id
        if br.role == "defender":
            assert br.turns[0] == d.turns[0]  # the recorded prefix, tokens and reward exactly
            assert br.turns[1].obs_ids == d.turns[1].obs_ids and br.turns[1].obs_text == d.turns[1].obs_text
        else:  # the attacker's moves before the fork are replayed as recorded
            fork = d.turns[1].info["match_step"]
            before = [t for t in orig.turns if t.info["match_step"] < fork]
            assert before and [t.action_ids for t in br.turns[: len(before)]] == [t.action_ids for t in before]
            assert br.turns[0].obs_ids == orig.turns[0].obs_ids
    col.close()


def test_two_player_branch_needs_the_partner_episode(roles: dict[str, Any]) -> None:
    from creditgym.agents.scripted import ScriptedPolicy

    expert = ScriptedPolicy(REDTEAM_SELFPLAY, tokenizer=roles["attacker"].tokenizer)
    col = Collector(policies={"attacker": expert, "defender": roles["defender"]}, env_id=REDTEAM_SELFPLAY,
                    env_kwargs={"max_turns": 3, "goal_types": ("canary",)}, sampling=Sampling(max_new_tokens=6))  # fmt: skip
    eps = col.collect(1, seed=4)
    d = next(e for e in eps if e.role == "defender")
    with pytest.raises(ValueError, match="both roles"):
        col.branch([d], [1], 1)
    col.close()
