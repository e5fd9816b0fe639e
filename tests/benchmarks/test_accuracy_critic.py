"""Critic estimators in the accuracy benchmark (docs/accuracy.md, "Critic estimators"): the critic
their trainer fits, on held-out episodes of the same policy, checked against the chain env's
closed-form values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from typer.testing import CliRunner

from creditgym.agents.rollout import Collector
from creditgym.agents.scripted import ScriptedPolicy
from creditgym.batch import CreditBatch
from creditgym.benchmarks import accuracy_envs as chain
from creditgym.benchmarks.accuracy import collect_critic_set, measure_accuracy
from creditgym.benchmarks.accuracy_critic import CriticSettings, critic_backbone, critic_kind, fit_critic

EPS = 0.8
P_GOOD = 1 - EPS / 2


class ChainModelPolicy(ScriptedPolicy):
    """The chain's noisy scripted expert with a network: a tiny random-init causal LM over its byte
    tokenizer, what a critic copies (the actions stay scripted, so the truth stays closed-form)."""

    def __init__(self, seed: int = 2):
        super().__init__(chain.ENV_ID, epsilon=EPS, seed=seed)
        torch.manual_seed(0)
        cfg = transformers.Qwen2Config(vocab_size=len(self.tokenizer), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                       max_position_embeddings=512)  # fmt: skip
        self.model = transformers.Qwen2ForCausalLM(cfg)

    def base_model(self) -> torch.nn.Module:
        return self.model


@pytest.fixture(scope="module")
def chain_sets():
    torch.set_num_threads(1)
    policy = ChainModelPolicy()
    collector = Collector(policy, chain.ENV_ID, group_size=8)
    try:
        fit, base = collector.collect(6, seed=1), collector.collect(6, seed=2)
    finally:
        collector.close()
    return policy, fit, base


def _closed_form_corr(batch: CreditBatch, base, g_id: int) -> float:
    est, true = [], []
    for b, ep in enumerate(base):
        good = [t.action_ids[0] == g_id for t in ep.turns]
        v = chain.chain_values(good, P_GOOD)
        for k in range(ep.num_turns):
            est.append(float(batch.values_BK[b, k]))
            true.append(v[k])
    return float(np.corrcoef(est, true)[0, 1])


@pytest.mark.parametrize(("name", "steps"), [("digirl", 200), ("gae", 800)])
def test_fitted_critic_values_track_the_closed_form(chain_sets, name, steps):
    """Fitted on one set of chain episodes, each critic values another set's states close to
    V(s_k) = [prefix good] p^(N-k) (DigiRL's step classifier on frozen features, PPO's value model)."""
    policy, fit, base = chain_sets
    attach = fit_critic(name, policy.model, fit, CriticSettings(steps=steps, batch_episodes=4))
    batch = attach(CreditBatch.from_episodes(base), base)
    assert _closed_form_corr(batch, base, policy.tokenizer.encode("g")[0]) > 0.9
    if name == "gae":  # PPO's critic values every token (GAE's default level is "token")
        assert batch.token_values_BT is not None and batch.token_values_BT.shape == batch.ids_BT.shape


def test_the_critic_copies_the_network_and_leaves_it_alone(chain_sets):
    policy, fit, _ = chain_sets
    before = [p.detach().clone() for p in policy.model.parameters()]
    fit_critic("gae", policy.model, fit, CriticSettings(steps=3), progress=True)  # with its progress bar
    fit_critic("digirl", policy.model, fit, CriticSettings(steps=3))
    assert all(torch.equal(a, b) for a, b in zip(before, policy.model.parameters(), strict=True))
    assert critic_kind("digirl") == "step" and critic_kind("gae") == "ppo"
    assert critic_backbone(policy) is policy.model
    assert critic_backbone(ScriptedPolicy.for_env(chain.ENV_ID)) is None


def test_critic_rows_are_measured_on_a_held_out_fit_set():
    policy = ChainModelPolicy()
    settings = CriticSettings(steps=100)
    report = measure_accuracy(chain.ENV_ID, policy, episodes=32, group_size=8, branches=8,
                              estimators=["gae", "digirl", "grpo"], critic=settings, seed=4)  # fmt: skip
    rows = {r.name: r for r in report.rows}
    assert all(r.skipped is None for r in report.rows)
    assert rows["gae"].critic_episodes == rows["digirl"].critic_episodes == 32 and rows["grpo"].critic_episodes == 0
    assert rows["gae"].episodes_per_sample == 1.0  # the fit set is reported beside the row, not in the cost
    assert rows["digirl"].spearman > rows["grpo"].spearman + 0.1
    assert "(+32 critic fit episodes)" in report.table() and report.config["critic"]["steps"] == 100
    # held out: the fit set's tasks are other tasks than the base episodes'
    fitset = collect_critic_set(policy, chain.ENV_ID, settings, 32, 8, 4, None, None, None)
    base = Collector(policy, chain.ENV_ID, group_size=8)
    try:
        base_tasks = {e.task_id for e in base.collect(4, seed=4)}
    finally:
        base.close()
    assert len(fitset.episodes) == 32 and not base_tasks & {e.task_id for e in fitset.episodes}
    again = measure_accuracy(chain.ENV_ID, ChainModelPolicy(), episodes=32, group_size=8, branches=8,
                             estimators=["gae", "digirl", "grpo"], critic=settings, seed=4)  # fmt: skip
    assert again.to_json(deterministic=True) == report.to_json(deterministic=True)


def test_a_scripted_policy_skips_the_critic_rows_and_bad_settings_say_what_to_do():
    report = measure_accuracy(chain.ENV_ID, episodes=8, group_size=4, branches=2, estimators=["gae", "digirl"], epsilon=EPS)
    assert all(r.skipped is not None and r.skipped.startswith("needs a model policy") for r in report.rows)
    with pytest.raises(ValueError, match="critic steps"):
        CriticSettings(steps=0)
    with pytest.raises(ValueError, match="critic episodes"):
        CriticSettings(episodes=0)
    with pytest.raises(ValueError, match="fit set is empty"):
        fit_critic("gae", ChainModelPolicy().model, [], CriticSettings())
    from creditgym.cli import app

    bad = CliRunner().invoke(app, ["bench", "accuracy", chain.ENV_ID, "--critic-steps", "0"])
    assert bad.exit_code != 0 and "critic steps" in bad.output
