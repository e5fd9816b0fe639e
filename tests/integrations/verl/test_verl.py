"""creditgym.integrations.verl against verl 0.9.1's own classes (run in .venv-verl by `make test-verl`).

A fake server manager stands in for verl's LLM servers: it replays scripted SearchEasy episodes token by
token (checking every prompt the agent loop sends is the episode's exact context), or generates with the
tiny model. The agent loop's outputs go through verl's own padding (`AgentLoopWorker._agent_loop_postprocess`
and `_postprocess`: left-padded prompts, right-padded responses) into a DataProto, whose advantages must
equal `credit.compute` on the same episodes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopOutput,
    AgentLoopWorker,
    DictConfigWrap,
    _agent_loop_registry,
)
from verl.protocol import DataProto
from verl.trainer.ppo import core_algos
from verl.workers.rollout.replica import TokenOutput

from creditgym import CreditBatch, Episode, TaskSpec
from creditgym.agents import Collector, Context, Sampling, ScriptedPolicy, tiny
from creditgym.credit import ESTIMATORS, compute
from creditgym.integrations import verl as cv

ENV_ID = "creditgym/SearchEasy-v0"
ENV_KWARGS = {"max_turns": 3}
PROMPT_LEN, RESPONSE_LEN = 512, 1536
SUPPORTED = [n for n in sorted(ESTIMATORS) if n not in {"gae", "digirl", "igpo", "a2tgpo", "siop", "remax", "spo", "vineppo"}]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny.build(seed=0).tokenizer


class ReplayServer:
    """verl's server manager API (`generate(request_id, prompt_ids=..., sampling_params=...)` -> TokenOutput),
    replaying one scripted episode per request id, in order of first appearance."""

    def __init__(self, episodes: list[Episode]):
        self.pending, self.by_request, self.calls = list(episodes), {}, 0

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **_: Any) -> TokenOutput:
        if request_id not in self.by_request:
            self.by_request[request_id] = [self.pending.pop(0), 0]
        ep, k = self.by_request[request_id]
        context = [i for t in ep.turns[:k] for i in (*t.obs_ids, *t.action_ids)] + list(ep.turns[k].obs_ids)
        assert prompt_ids == context, "the agent loop must send the episode's exact context"
        assert sampling_params["max_tokens"] > 0 and sampling_params["temperature"] == 1.0
        self.by_request[request_id][1] += 1
        self.calls += 1
        turn = ep.turns[k]
        return TokenOutput(token_ids=list(turn.action_ids), log_probs=[-0.5 - 0.01 * i for i in range(len(turn.action_ids))])


def rollout_config() -> Any:
    return OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": PROMPT_LEN, "response_length": RESPONSE_LEN}},
                             "data": {}})


def make_loop(server: Any, tok: Any) -> Any:
    """The agent loop as verl's worker builds it (hydra instantiate of the registry entry's `_target_`)."""
    import hydra

    cv.register_agent_loop()
    return hydra.utils.instantiate(_agent_loop_registry[cv.AGENT_NAME], trainer_config=DictConfigWrap(rollout_config()),
                                   server_manager=server, tokenizer=tok, processor=None, dataset_cls=None,
                                   data_config=DictConfigWrap(OmegaConf.create({})), hf_model_type=None, tools=None)


def scripted_episodes(tok: Any, row: dict[str, Any], n: int, seed0: int) -> list[Episode]:
    """n episodes of the row's task by an imperfect scripted expert (varied actions and returns)."""
    info = row["extra_info"]
    out = []
    for s in range(seed0, seed0 + n):
        col = Collector(ScriptedPolicy.for_env(ENV_ID, tokenizer=tok, epsilon=0.5, seed=s), ENV_ID, env_kwargs=ENV_KWARGS)
        out += col.collect(num_groups=1, seed=info["seed"], tasks=[TaskSpec(category="verl", task_id=info["task_id"])])
    return out


def verl_batch(tok: Any, outputs: list[AgentLoopOutput], uids: list[str]) -> DataProto:
    """verl's own post-processing of agent-loop outputs (padding, masks, rm_scores, extra fields -> non_tensor_batch)."""
    worker = object.__new__(AgentLoopWorker)
    worker.tokenizer, worker.processor, worker.reward_loop_worker_handles = tok, None, None
    worker.distillation_enabled, worker.mm_processor_kwargs = False, {}
    worker.rollout_config = rollout_config().actor_rollout_ref.rollout
    loop = asyncio.new_event_loop()
    internal = [loop.run_until_complete(worker._agent_loop_postprocess(o, False, raw_prompt=[])) for o in outputs]
    loop.close()
    data = worker._postprocess(internal, input_non_tensor_batch={"uid": np.array(uids, dtype=object)})
    data.batch["token_level_rewards"] = data.batch["rm_scores"]
    return data


@pytest.fixture(scope="module")
def rolled(tokenizer: Any) -> tuple[list[Episode], list[AgentLoopOutput], DataProto, list[str]]:
    """Two groups (two tasks) of four episodes each, played through the agent loop and a ReplayServer."""
    rows = cv.task_rows(ENV_ID, [11, 12], ENV_KWARGS)
    episodes, outputs, uids = [], [], []
    for g, row in enumerate(rows):
        eps = scripted_episodes(tokenizer, row, 4, seed0=10 * g)
        server = ReplayServer(eps)
        loop = make_loop(server, tokenizer)
        for ep in eps:  # one at a time, so the server replays them in order
            out = asyncio.run(loop.run({"temperature": 1.0, "logprobs": True}, uid=f"u{g}", **row))
            outputs.append(out)
            uids.append(f"u{g}")
        assert server.calls == sum(ep.num_turns for ep in eps) and not server.pending
        episodes += [dataclasses.replace(ep, group_id=f"u{g}", node_ids=None) for ep in eps]
    return episodes, outputs, verl_batch(tokenizer, outputs, uids), uids


def expected_advantages(episodes: list[Episode], estimator: str, T: int) -> torch.Tensor:
    """`credit.compute` on `from_episodes`, cut to each episode's response (the tokens after its first context)."""
    adv = compute(estimator, CreditBatch.from_episodes(episodes)).token_BT
    out = torch.zeros(len(episodes), T)
    for b, ep in enumerate(episodes):
        start = len(ep.turns[0].obs_ids)
        n = min(T, sum(len(t.obs_ids) + len(t.action_ids) for t in ep.turns) - start)
        out[b, :n] = adv[b, start : start + n]
    return out


def test_agent_loop_output_has_verls_fields_and_the_episodes_tokens(rolled):
    episodes, outputs, data, _ = rolled
    assert len({ep.total_reward for ep in episodes}) > 1, "the imperfect expert should give varied returns"
    for ep, out in zip(episodes, outputs):
        assert isinstance(out, AgentLoopOutput)
        assert out.prompt_ids == list(ep.turns[0].obs_ids)
        assert len(out.response_ids) == len(out.response_mask) == len(out.response_logprobs)
        assert sum(out.response_mask) == sum(len(t.action_ids) for t in ep.turns)
        assert out.reward_score == pytest.approx(ep.total_reward)
        extra = out.extra_fields["creditgym"]
        assert extra["state_keys"] == [t.state_key for t in ep.turns] and extra["group"] == ep.group_id
        assert extra["turn_rewards"] == pytest.approx([t.reward for t in ep.turns])
        assert max(extra["token_turn"]) == ep.num_turns - 1
        lp = [x for x, m in zip(out.response_logprobs, out.response_mask) if m]  # what the server returned, in order
        assert lp == pytest.approx([-0.5 - 0.01 * i for t in ep.turns for i in range(len(t.action_ids))])
    B = len(episodes)
    assert data.batch["prompts"].shape == (B, PROMPT_LEN) and data.batch["responses"].shape == (B, RESPONSE_LEN)
    assert data.batch["response_mask"].shape == data.batch["rollout_log_probs"].shape == (B, RESPONSE_LEN)
    assert data.batch["attention_mask"].shape == (B, PROMPT_LEN + RESPONSE_LEN)
    assert data.non_tensor_batch["creditgym"].shape == (B,) and data.non_tensor_batch["creditgym"][0]["group"] == "u0"
    for b, out in enumerate(outputs):  # verl's layout: prompts left-padded, responses right-padded
        P, R = len(out.prompt_ids), len(out.response_ids)
        assert data.batch["prompts"][b, PROMPT_LEN - P :].tolist() == out.prompt_ids
        assert data.batch["responses"][b, :R].tolist() == out.response_ids and not data.batch["response_mask"][b, R:].any()
        assert data.batch["attention_mask"][b].tolist() == [0] * (PROMPT_LEN - P) + [1] * (P + R) + [0] * (RESPONSE_LEN - R)


@pytest.mark.parametrize("estimator", SUPPORTED)
def test_verl_advantages_equal_credit_compute(rolled, estimator):
    episodes, _, data, _ = rolled
    data = cv.compute_advantage(data.select_idxs(list(range(len(data)))), estimator)
    mask = data.batch["response_mask"]
    expected = expected_advantages(episodes, estimator, RESPONSE_LEN) * mask
    torch.testing.assert_close(data.batch["advantages"], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(data.batch["returns"], data.batch["advantages"])


def test_routed_ray_trainer_step_computes_gigpo_with_state_keys(rolled):
    import verl.trainer.ppo.ray_trainer as rt

    episodes, _, data, _ = rolled
    import verl.trainer.ppo.v1.trainer_base as v1

    original, original_v1 = rt.compute_advantage, v1.compute_advantage_for_multi_trajectories
    cfg = OmegaConf.create({"gamma": 1.0, "creditgym": {"omega": 0.5, "gamma": 0.9}})
    with cv.creditgym_advantage():
        assert rt.compute_advantage.__wrapped__ is original
        assert v1.compute_advantage_for_multi_trajectories.__wrapped__ is original_v1
        out = rt.compute_advantage(data.select_idxs(list(range(len(data)))), adv_estimator="creditgym_gigpo", config=cfg)
        with pytest.raises(ValueError, match="Unknown advantage estimator"):  # verl's own names still go to verl
            rt.compute_advantage(data.select_idxs([0]), adv_estimator="no_such_estimator", config=cfg)
    assert rt.compute_advantage is original and v1.compute_advantage_for_multi_trajectories is original_v1
    adv = compute("gigpo", CreditBatch.from_episodes(episodes), omega=0.5, gamma=0.9).token_BT
    exp = torch.zeros_like(out.batch["advantages"])
    for b, ep in enumerate(episodes):
        s = len(ep.turns[0].obs_ids)
        n = sum(len(t.obs_ids) + len(t.action_ids) for t in ep.turns) - s
        exp[b, :n] = adv[b, s : s + n]
    torch.testing.assert_close(out.batch["advantages"], exp * out.batch["response_mask"], rtol=0, atol=1e-6)
    assert out.batch["advantages"].abs().sum() > 0


def test_v1_route_reads_the_stored_extra_fields(rolled):
    """v1's trainer reads only tensors (no attention mask, no response ids) from TransferQueue; the route
    fetches each row's stored extra_fields by key."""
    episodes, outputs, data, uids = rolled
    keys = [f"{u}_{i}_0" for i, u in enumerate(uids)]
    v1 = DataProto.from_dict(tensors={k: data.batch[k] for k in ("response_mask", "token_level_rewards")},
                             non_tensors={"uid": np.array(uids, dtype=object)})
    stored = {k: dict(o.extra_fields) for k, o in zip(keys, outputs)}
    fetched: list[list[str]] = []

    def fetch(batch_keys):
        fetched.append(list(batch_keys))
        return [stored[k] for k in batch_keys]

    def original(*_, **__):
        raise AssertionError("a creditgym estimator must not reach verl's function")

    out = cv.route_v1(original, fetch)(v1, keys, "creditgym_tree_grpo", config=OmegaConf.create({}))
    assert fetched == [keys]
    expected = expected_advantages(episodes, "tree_grpo", RESPONSE_LEN) * data.batch["response_mask"]
    torch.testing.assert_close(out.batch["advantages"], expected, rtol=0, atol=1e-6)


def test_registered_in_verls_registry(rolled):
    episodes, _, data, uids = rolled
    names = cv.register_estimators()
    assert set(names) == {f"creditgym_{n}" for n in SUPPORTED}
    assert cv.register_estimators() == names  # idempotent: verl refuses a second, different function
    fn = core_algos.get_adv_estimator_fn("creditgym_rloo")
    assert fn is core_algos.ADV_ESTIMATOR_REGISTRY["creditgym_rloo"]
    # what verl's compute_advantage passes to a registered estimator
    adv, ret = fn(token_level_rewards=data.batch["token_level_rewards"], response_mask=data.batch["response_mask"],
                  index=np.array(uids, dtype=object), config=OmegaConf.create({}))
    expected = expected_advantages(episodes, "rloo", RESPONSE_LEN) * data.batch["response_mask"]
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"state keys.*creditgym_advantage"):  # the registry call lacks them
        core_algos.get_adv_estimator_fn("creditgym_gigpo")(
            token_level_rewards=data.batch["token_level_rewards"], response_mask=data.batch["response_mask"],
            index=np.array(uids, dtype=object), config=None)


def test_refuses_estimators_verl_cannot_feed():
    with pytest.raises(ValueError, match=r"critic.*creditgym's own trainer"):
        cv.check_verl_compatible("gae")
    for name in ("igpo", "remax", "vineppo"):
        with pytest.raises(ValueError, match="creditgym's own trainer"):
            cv.check_verl_compatible(name)
        with pytest.raises(ValueError, match="creditgym's own trainer"):
            cv.register_estimators([name])
    with pytest.raises(KeyError, match="unknown estimator"):
        cv.check_verl_compatible("nope")


def test_response_cut_at_verls_response_length_keeps_whole_turn_bookkeeping(rolled):
    episodes = rolled[0]
    ep = max(episodes, key=lambda e: e.num_turns)
    first = len(ep.turns[0].action_ids)
    out = cv.episode_output(ep, "u0", PROMPT_LEN, first + 1)  # the cut falls in turn 1's observation
    extra = out["extra_fields"]["creditgym"]
    assert len(out["response_ids"]) == first + 1 and extra["truncated"]
    assert extra["turn_rewards"] == [ep.turns[0].reward] and len(extra["state_keys"]) == 1
    with pytest.raises(ValueError, match="prompt_length"):
        cv.episode_output(ep, "u0", 3, RESPONSE_LEN)


class TinyServer:
    """A server manager generating with the tiny model (sampled, seeded), returning its logprobs."""

    def __init__(self, seed: int):
        self.policy, self.seed = tiny.build(seed=0), seed

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **_: Any) -> TokenOutput:
        self.seed += 1
        gen = self.policy.generate([Context(ids=list(prompt_ids))], Sampling(max_new_tokens=min(12, sampling_params["max_tokens"]), seed=self.seed))[0]
        return TokenOutput(token_ids=list(gen.token_ids), log_probs=list(gen.logprobs))


def test_agent_loop_with_the_tiny_models_generation(tokenizer):
    row = cv.task_rows(ENV_ID, [5], {"max_turns": 2})[0]
    loop = make_loop(TinyServer(seed=0), tokenizer)
    outs = [asyncio.run(loop.run({"temperature": 1.0}, uid="t0", **row)) for _ in range(2)]
    data = verl_batch(tokenizer, outs, ["t0", "t0"])
    for out in outs:
        assert out.response_logprobs is not None and all(lp <= 0 for lp in out.response_logprobs)
        assert sum(out.response_mask) >= 1 and len(out.extra_fields["creditgym"]["state_keys"]) >= 1
    adv = cv.compute_advantage(data, "gigpo").batch["advantages"]
    assert adv.shape == (2, RESPONSE_LEN) and not adv[data.batch["response_mask"] == 0].any()
    with pytest.raises(ValueError, match=r"extra_info\.env_id"):
        asyncio.run(loop.run({}, uid="t0", extra_info={}))


def test_example_config_composes_with_verls_ppo_trainer_config():
    """examples/verl_gigpo_search.yaml extends verl's ppo_trainer; every key it sets but two (creditgym's own)
    exists in verl's defaults, so a typo cannot pass silently."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir, initialize_config_module

    examples = Path(__file__).resolve().parents[3] / "examples"
    with initialize_config_dir(config_dir=str(examples), version_base=None):
        cfg = compose(config_name="verl_gigpo_search")
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        base = compose(config_name="ppo_trainer")
    assert cv.creditgym_name(cfg.algorithm.adv_estimator) == "gigpo"
    assert cv.estimator_cfg(cfg.algorithm) == {"gamma": 0.95, "omega": 1.0}
    assert cfg.actor_rollout_ref.rollout.agent.default_agent_loop == cv.AGENT_NAME
    own = {"algorithm.creditgym", "ray_kwargs.ray_init.runtime_env.worker_process_setup_hook", "hydra"}

    def leaves(node: Any, prefix: str = "") -> list[str]:
        if not OmegaConf.is_dict(node):
            return [prefix]
        return [x for k in node for x in leaves(node._get_node(k), f"{prefix}.{k}" if prefix else str(k))]

    def in_base(key: str) -> bool:  # the key exists (mandatory `???` values included)
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        return OmegaConf.is_dict(node) and leaf in list(node.keys())

    user = OmegaConf.load(examples / "verl_gigpo_search.yaml")
    unknown = [k for k in leaves(user) if k != "defaults" and not any(k == o or k.startswith(o + ".") for o in own)
               and not in_base(k)]
    assert not unknown, f"keys verl's ppo_trainer config does not have: {unknown}"


def test_install_registers_everything_once_in_a_fresh_process():
    """`install()` is what Ray's worker_process_setup_hook runs in each worker: estimators, agent loop, routes."""
    import subprocess
    import sys

    code = (
        "from creditgym.integrations import verl as cv\n"
        "cv.install(); cv.install()\n"
        "import verl.trainer.ppo.ray_trainer as rt, verl.trainer.ppo.v1.trainer_base as v1\n"
        "from verl.trainer.ppo import core_algos\n"
        "from verl.experimental.agent_loop import agent_loop as al\n"
        "assert core_algos.get_adv_estimator_fn('creditgym_gigpo').__name__ == 'creditgym_gigpo'\n"
        "assert al._agent_loop_registry['creditgym_agent'] == {'_target_': 'creditgym.integrations.verl.CreditgymAgentLoop'}\n"
        "for f in (rt.compute_advantage, v1.compute_advantage_for_multi_trajectories):\n"
        "    assert f.__wrapped__ is not None and getattr(f.__wrapped__, '__wrapped__', None) is None  # routed once\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_layout_properties_of_the_registry_path(data):
    """Without the agent loop's extras (turns from response-mask runs, rewards from token_level_rewards):
    advantages are 0 off the mask, follow the rows when they are permuted, and do not change when verl pads
    the responses wider."""
    B = data.draw(st.integers(2, 6))
    T = data.draw(st.integers(4, 12))
    mask = torch.tensor(data.draw(st.lists(st.lists(st.integers(0, 1), min_size=T, max_size=T), min_size=B, max_size=B)))
    mask[:, 0] = 1  # every row has an action token
    lengths = torch.tensor(data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    mask = mask * (torch.arange(T)[None, :] < lengths[:, None])  # right padding
    rewards = torch.zeros(B, T)
    last = lengths - 1
    rewards[torch.arange(B), last] = torch.tensor(data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=B, max_size=B)))
    uids = np.array(data.draw(st.lists(st.sampled_from(["a", "b"]), min_size=B, max_size=B)), dtype=object)
    estimator = data.draw(st.sampled_from(["grpo", "rloo", "turn_return", "mt_grpo"]))

    def adv(m: torch.Tensor, r: torch.Tensor, u: np.ndarray) -> torch.Tensor:
        d = DataProto.from_dict(tensors={"response_mask": m, "token_level_rewards": r}, non_tensors={"uid": u})
        return cv.compute_advantage(d, estimator).batch["advantages"]

    a = adv(mask, rewards, uids)
    assert not a[mask == 0].any()
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(B * T))
    torch.testing.assert_close(adv(mask[perm], rewards[perm], uids[perm.numpy()]), a[perm], rtol=0, atol=1e-6)
    wide = adv(torch.nn.functional.pad(mask, (0, 5)), torch.nn.functional.pad(rewards, (0, 5)), uids)
    torch.testing.assert_close(wide[:, :T], a, rtol=0, atol=1e-6)
    assert not wide[:, T:].any()
