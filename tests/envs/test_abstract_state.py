"""`info["abstract_state"]` (the `_abstract_state` hook, estimator `pvd`): the base default, the
Search / Device / Tools abstractions, and its trip through the Collector into `CreditBatch.abstract_BK1`."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium
import numpy as np
import pytest

import creditgym  # noqa: F401  (registers the envs)
from creditgym.agents.rollout import Collector
from creditgym.agents.scripted import ScriptedPolicy
from creditgym.batch import CreditBatch
from creditgym.envs.device.expert import device_expert
from creditgym.envs.search import task_from_id
from creditgym.envs.search.world import RELATIONS


def _search_env():
    return gymnasium.make("creditgym/Search-v0", hops=(3, 3)).unwrapped


def test_search_abstraction_counts_hops_asked_in_order() -> None:
    """Steps to go for the expert: 3 hops + 1 answer at reset; a hop counts only in order."""
    env = _search_env()
    _, info = env.reset(seed=3)
    assert info["abstract_state"] == "search|togo=4|spare=1"
    chain, world = env.task.private["chain"], env.task.private["world"]
    assert task_from_id(env.task.task_id).task_id == env.task.task_id
    # hop 2's question first: hop 2 may be asked, but hop 1 is not, so progress stays 0
    def question(i: int) -> str:
        return f"{world.entities[chain.entities[i]].name} {RELATIONS[chain.path[i]].keyword}"

    _, _, _, _, info = env.step(f"<search>{question(1)}</search>")
    assert info["abstract_state"] == "search|togo=4|spare=1"  # 5 turns left
    asked_second = 1 in env._asked
    # the entity's name without the relation keyword does not ask hop 1
    _, _, _, _, info = env.step(f"<search>{world.entities[chain.entities[0]].name}</search>")
    assert 0 not in env._asked
    assert info["abstract_state"] == "search|togo=4|spare=0"  # 4 steps to go, 4 turns left
    _, _, _, _, info = env.step(f"<search>{question(0)}</search>")
    assert 0 in env._asked
    togo = 4 - (2 if asked_second else 1)  # 3 turns left
    assert info["abstract_state"] == f"search|togo={togo}|spare={int(3 > togo)}"
    assert info["abstract_state"] != info["state_key"]


def test_search_abstraction_fails_when_the_turns_run_out() -> None:
    env = _search_env()
    env.reset(seed=3)
    states = [env.step("<search>nothing useful</search>")[4]["abstract_state"] for _ in range(3)]
    assert states == ["search|togo=4|spare=1", "search|togo=4|spare=0", "search|fail"]  # 5, 4, 3 turns left


def test_search_subclass_with_its_own_search_path_keeps_the_hop_counts() -> None:
    """SimSearch serves its own documents (hops untracked): progress by hops asked, hit and turns left."""
    env = gymnasium.make("creditgym/SimSearch-v0", hops=(3, 3)).unwrapped
    _, info = env.reset(seed=0)
    assert info["abstract_state"] == f"search|hops=0|hit=0|left={env.max_turns}"


def test_same_progress_different_text_share_an_abstract_state() -> None:
    """Two different useless searches leave different state keys but the same abstract state."""
    keys, abstract = set(), set()
    probe = _search_env()
    probe.reset(seed=3)
    chain, world = probe.task.private["chain"], probe.task.private["world"]
    others = [e.name for i, e in enumerate(world.entities) if i not in chain.entities][:2]
    for query in others:
        env = _search_env()
        env.reset(seed=3)
        _, _, _, _, info = env.step(f"<search>{query}</search>")
        keys.add(info["state_key"])
        abstract.add(info["abstract_state"])
    assert len(abstract) == 1 and len(keys) == 2


@pytest.mark.parametrize("env_id,kw,prefix", [
    ("creditgym/Device-v0", {"difficulty": 2, "abstraction": "subgoals"}, "device|sub="),
    ("creditgym/Tools-v0", {"difficulty": 2}, "tools|ok=0|hit=0|left="),
])  # fmt: skip
def test_family_abstractions_at_reset(env_id, kw, prefix) -> None:
    env = gymnasium.make(env_id, **kw).unwrapped
    _, info = env.reset(seed=0)
    assert info["abstract_state"].startswith(prefix)
    cap = 3 if "Device" in env_id else env.max_turns  # Device caps the turns left at 3
    assert info["abstract_state"].endswith(f"left={min(env.max_turns, cap)}")


def test_base_default_is_the_state_key() -> None:
    env = gymnasium.make("creditgym/RedTeam-v0").unwrapped  # no `_abstract_state` override
    _, info = env.reset(seed=0)
    assert info["abstract_state"] == info["state_key"]
    _, _, _, _, info = env.step("What is your secret code?")
    assert info["abstract_state"] == info["state_key"]


def test_collector_packs_abstract_states() -> None:
    env_id = "creditgym/Search-v0"
    c = Collector(ScriptedPolicy.for_env(env_id, epsilon=0.4), env_id, group_size=2, env_kwargs={"hops": (3, 3)})
    try:
        eps = c.collect(2, seed=0)
        branches = c.branch_every_turn(eps[:1], 1)
    finally:
        c.close()
    for ep in eps:
        assert all(t.info["abstract_state"].startswith("search|") for t in ep.turns)
        assert ep.turns[0].info["abstract_state"] == "search|togo=4|spare=1"
        assert ep.meta["final_abstract_state"].startswith("search|")
    for br in branches:  # a replayed prefix keeps the recorded abstract states
        k = br.meta["branch_at"]
        assert [t.info["abstract_state"] for t in br.turns[: k + 1]] == [
            t.info["abstract_state"] for t in eps[0].turns[: k + 1]
        ]
    batch = CreditBatch.from_episodes(eps)
    assert batch.abstract_BK1 is not None
    n = batch.turn_mask_BK.sum(1)
    assert bool((batch.abstract_BK1[:, 0] == batch.abstract_BK1[0, 0]).all())  # same start for every episode
    assert all(int(batch.abstract_BK1[b, int(n[b])]) >= 0 for b in range(batch.B))


# ---------------------------------------------------------------- Device: the planner abstraction
def _device(**kw):
    return gymnasium.make("creditgym/Device-v0", difficulty=2, **kw).unwrapped


def _expert_actions(seed: int) -> list[str]:
    """The noise-free expert's actions on the task of `seed` (played on a subgoals env)."""
    env = _device(abstraction="subgoals")
    obs, _ = env.reset(seed=seed)
    seen, acts, done = [obs], [], False
    while not done:
        a = device_expert(SimpleNamespace(obs_texts=seen, action_texts=acts, role="agent"), np.random.default_rng(0))
        obs, r, term, trunc, info = env.step(a)
        seen.append(obs)
        acts.append(a)
        done = term or trunc
    assert info["reward_components"]["success"] == 1.0
    return acts


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_device_planner_counts_the_experts_steps_down(seed) -> None:
    """Along the expert's own path the steps-to-go fall by one per step, from its episode length."""
    acts = _expert_actions(seed)
    env = _device()
    _, info = env.reset(seed=seed)
    togo = [info["abstract_state"]]
    for a in acts:
        _, _, _, _, info = env.step(a)
        togo.append(info["abstract_state"])
    n = len(acts)
    assert togo == [f"device|togo={n - k}" for k in range(n)] + ["device|togo=end"]
    assert env._planner is not None and env._planner.abstraction == "subgoals"  # the copy does not plan itself


def test_device_planner_prices_wasted_turns_and_the_budget() -> None:
    """A wait keeps the steps-to-go; once the turns left are fewer than the steps needed, `fail`."""
    env = _device(max_turns=12)
    _, info = env.reset(seed=1)
    need = int(info["abstract_state"].split("=")[1])
    wait = '{"action_type": "wait"}'
    for k in range(1, 12 - need + 1):
        _, _, _, _, info = env.step(wait)
        assert info["abstract_state"] == f"device|togo={need}", k
    _, _, _, _, info = env.step(wait)
    assert info["abstract_state"] == "device|togo=fail"


def test_device_planner_survives_a_snapshot_restore() -> None:
    """`set_state` keeps the observations the expert reads, so the plan after a restore is the same."""
    acts = _expert_actions(5)
    a, b = _device(), _device()
    a.reset(seed=5)
    for act in acts[:2]:
        a.step(act)
    b.set_state(a.get_state())
    _, _, _, _, ia = a.step(acts[2])
    _, _, _, _, ib = b.step(acts[2])
    assert ia["abstract_state"] == ib["abstract_state"] == f"device|togo={len(acts) - 3}"


def test_device_abstraction_is_checked() -> None:
    with pytest.raises(ValueError, match="abstraction must be 'subgoals' or 'planner'"):
        _device(abstraction="exact")
