"""agents.scripted: play_episode (one- and two-player), play_episodes and success_rate."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from creditgym.agents.base import Context
from creditgym.agents.scripted import PlayResult, play_episode, play_episodes, success_rate
from creditgym.envs.redteam import RedTeamSelfPlayEnv
from creditgym.envs.redteam import expert as rt_agents
from creditgym.envs.search import SearchEnv
from creditgym.registry import scripted_functions


def _hand_loop(env, fn, seed, rng):
    """The loop play_episode replaces, written out."""
    obs, info = env.reset(seed=seed)
    ctx, rewards = Context(obs_texts=[obs]), []
    while True:
        a = fn(ctx, rng)
        obs, r, te, tr, info = env.step(a)
        ctx.action_texts.append(a)
        ctx.obs_texts.append(obs)
        rewards.append(r)
        if te or tr:
            return info, ctx, rewards, te, tr


@pytest.mark.parametrize("which", [0, 1])
def test_play_episode_matches_the_hand_loop(which):
    fn = scripted_functions("creditgym/Search-v0")[which]
    for seed in range(4):
        res = play_episode(SearchEnv(split="test"), fn, seed)
        info, ctx, rewards, te, tr = _hand_loop(SearchEnv(split="test"), fn, seed, np.random.default_rng(seed))
        assert isinstance(res, PlayResult)
        assert res.ctx.obs_texts == ctx.obs_texts and res.ctx.action_texts == ctx.action_texts
        assert res.rewards == rewards and res.turns == len(rewards) == len(ctx.action_texts)
        assert res.info["reward_components"] == info["reward_components"] == res.components
        assert (res.terminated, res.truncated) == (te, tr) and res.success == info["reward_components"]["success"]
        assert res.roles == ["agent"] * res.turns and res.contexts == {"agent": res.ctx}


def test_shared_rng_is_used_across_episodes():
    calls = []

    def fn(ctx, rng):
        calls.append(float(rng.random()))
        return "<think>t</think><answer>x</answer>"

    rng = np.random.default_rng(7)
    results = play_episodes(SearchEnv(split="test"), fn, range(3), rng=rng)
    assert [r.turns for r in results] == [1, 1, 1]
    assert calls == list(np.random.default_rng(7).random(3))
    calls.clear()
    play_episodes(SearchEnv(split="test"), fn, [5, 5])  # rng=None: a fresh default_rng(seed) per episode
    assert calls[0] == calls[1] == float(np.random.default_rng(5).random())


def test_role_max_turns_and_options():
    seen = []

    def fn(ctx, rng):
        seen.append(ctx.role)
        return "<think>t</think><search>Ferbreithga</search>"

    res = play_episode(SearchEnv(split="test"), fn, 0, role="solver", max_turns=2)
    assert res.turns == 2 and not res.terminated and not res.truncated and seen == ["solver", "solver"]
    assert len(res.ctx.obs_texts) == 3 and res.contexts == {"solver": res.ctx}
    stub = _OneStep()
    one = play_episode(stub, lambda ctx, rng: "go", 4, options={"k": 1})
    assert stub.reset_args == (4, {"k": 1}) and one.ctx.obs_texts == ["start", "end"] and one.rewards == [0.5]
    assert one.terminated and one.success == 1.0 and one.totals() == {"agent": 0.5}


class _OneStep:
    def reset(self, seed=None, options=None):
        self.reset_args = (seed, options)
        return "start", {}

    def step(self, action):
        return "end", 0.5, True, False, {"reward_components": {"success": 1.0}}


def test_two_player_mapping_picks_by_role_and_totals_are_zero_sum():
    env = RedTeamSelfPlayEnv(reward_scheme="zero_sum", max_turns=3)
    fns = {"attacker": rt_agents.attacker_expert, "defender": rt_agents.defender_expert}
    res = play_episode(env, fns, 3)
    assert set(res.contexts) == {"attacker", "defender"} and res.ctx is res.contexts["attacker"]
    assert res.roles[:2] == ["attacker", "defender"] and len(res.roles) == res.turns
    for role, ctx in res.contexts.items():
        assert ctx.role == role and len(ctx.obs_texts) == len(ctx.action_texts) == res.roles.count(role)
    assert res.contexts["defender"].obs_texts[0].endswith("User: " + res.contexts["attacker"].action_texts[0])
    totals = res.totals()
    assert totals == {"attacker": -1.0, "defender": 1.0}  # the scripted defender holds
    assert totals["attacker"] == pytest.approx(res.info["reward_components_by_role"]["attacker"]["return"])


def test_success_rate_expert_beats_random_and_validates():
    seeds = range(6)
    assert success_rate("creditgym/SearchEasy-v0", "expert", seeds) == 1.0
    rand = success_rate("creditgym/SearchEasy-v0", "random", seeds)
    env = gymnasium.make("creditgym/SearchEasy-v0", split="test")
    assert 0.0 <= rand < 1.0
    manual = np.mean([
        play_episode(env, scripted_functions("creditgym/SearchEasy-v0")[1], s).success for s in seeds
    ])
    assert rand == pytest.approx(manual)
    with pytest.raises(ValueError, match="expert"):
        success_rate("creditgym/SearchEasy-v0", "best", seeds)
    with pytest.raises(ValueError, match="at least one seed"):
        success_rate("creditgym/SearchEasy-v0", "expert", [])
    with pytest.raises(KeyError, match="no scripted policy"):
        success_rate("NoSuchEnv-v0", "expert", seeds)
