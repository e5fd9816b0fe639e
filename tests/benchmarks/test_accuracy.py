"""The credit accuracy benchmark (docs/accuracy.md): metric math, Monte-Carlo truth on a chain env
with closed-form advantages, an oracle estimator ranked first, determinism, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from creditgym.agents.rollout import Collector
from creditgym.agents.scripted import ScriptedPolicy
from creditgym.benchmarks import accuracy_envs as chain
from creditgym.benchmarks.accuracy import measure_accuracy, measure_truth, reannotate
from creditgym.benchmarks.accuracy_metrics import (
    agreement,
    average_ranks,
    noise_ceiling,
    pearson,
    spearman,
    truth_from_branches,
)
from creditgym.credit import ESTIMATORS
from creditgym.credit.advantages import make_advantages
from creditgym.credit.registry import register_estimator
from creditgym.store import RolloutStore

EPS = 0.8  # scripted chain policy: good with probability p = 1 - EPS / 2
P_GOOD = 1 - EPS / 2


# ---------------------------------------------------------------- metric math, by hand


def test_average_ranks_share_ties_and_spearman_by_hand():
    np.testing.assert_allclose(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    # ranks x = [1, 2, 3], y = [1, 3, 2]: rho = 1 - 6 * (0 + 1 + 1) / (3 * 8) = 0.5
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0])) == pytest.approx(0.5)
    assert math.isnan(pearson(np.array([1.0, 1.0]), np.array([0.0, 1.0])))
    # regression: a constant scaled by a float is still constant (centring leaves ~1e-17, not 0)
    assert math.isnan(pearson(np.array([0.1, 0.1, 0.1]) * 0.109375, np.array([0.0, 1.0, 2.0])))


def test_truth_from_branches_by_hand():
    # one episode, 2 turns, rewards [0, 1]; branch returns-to-go before turn 0: [1, 0, 1, 0], before turn 1: [1, 1, 0, 1]
    truth = truth_from_branches([[0.0, 1.0]], [[[1, 0, 1, 0], [1, 1, 0, 1]]], gamma=1.0)
    # V0 = 0.5, Var(V0) = (1/3) / 4; V1 = 0.75, Var(V1) = (0.25) / 4; V2 = 0
    np.testing.assert_allclose(truth.value_N, [0.5, 0.75])
    np.testing.assert_allclose(truth.adv_N, [0.0 + 0.75 - 0.5, 1.0 + 0.0 - 0.75])
    np.testing.assert_allclose(truth.se_N, [math.sqrt(1 / 12 + 1 / 16), math.sqrt(1 / 16)])
    # halves: even branches [1, 1] / [1, 0] and odd branches [0, 0] / [1, 1]
    np.testing.assert_allclose(truth.half1_N, [0 + 0.5 - 1.0, 1.0 - 0.5])
    np.testing.assert_allclose(truth.half2_N, [0 + 1.0 - 0.0, 1.0 - 1.0])
    # discounted: A*_0 = r_0 + gamma V1 - V0
    np.testing.assert_allclose(truth_from_branches([[0.0, 1.0]], [[[1, 0, 1, 0], [1, 1, 0, 1]]], 0.5).adv_N[0], 0.375 - 0.5)
    with pytest.raises(ValueError, match=">= 2"):
        truth_from_branches([[0.0]], [[[1.0]]])


def test_agreement_by_hand():
    truth = truth_from_branches([[0.0, 0.0, 0.0]], [[[2, 2], [1, 1], [0, 0]]])  # A* = [-1, -1, 0], SE 0
    agr = agreement(np.array([-2.0, -1.0, 1.0]), truth)
    # best scale c = <a, A*> / <a, a> = 3 / 6; residual ||0.5 a - A*||^2 = 0 + 0.25 + 0.25 over ||A*||^2 = 2
    assert agr.rel_mse == pytest.approx(0.25)
    assert agr.sign_agree == 1.0 and agr.n_sign == 2  # the zero turn is not |A*| > 2 SE
    assert agr.spearman == pytest.approx(pearson(np.array([1.0, 2.0, 3.0]), np.array([1.5, 1.5, 3.0])))


def test_noise_ceiling_is_one_for_identical_halves_and_zero_for_opposite():
    x = np.array([0.1, -0.3, 0.5, 0.2])
    assert noise_ceiling(x, x) == pytest.approx(1.0)
    assert noise_ceiling(x, -x) == 0.0
    # split-half r = 0.6 -> Spearman-Brown 0.75 -> ceiling sqrt(0.75)
    rng = np.random.default_rng(0)
    a = rng.normal(size=20000)
    h1, h2 = a + rng.normal(size=a.size) * math.sqrt(2 / 3), a + rng.normal(size=a.size) * math.sqrt(2 / 3)
    assert noise_ceiling(h1, h2, rank=False) == pytest.approx(math.sqrt(0.75), abs=0.01)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(-50, 50).map(lambda i: i / 10), min_size=3, max_size=12),  # no underflowing squares
    st.floats(0.1, 10.0),
    st.integers(0, 2**31 - 1),
)
def test_agreement_is_invariant_to_positive_scale(adv, scale, seed):
    rng = np.random.default_rng(seed)
    n = len(adv)
    truth = truth_from_branches([[0.0] * n], [[list(rng.integers(0, 3, size=4).astype(float)) for _ in range(n)]])
    a = np.asarray(adv)
    one, scaled = agreement(a, truth), agreement(scale * a, truth)
    for field in ("spearman", "pearson", "sign_agree", "rel_mse", "spearman_first", "spearman_later"):
        x, y = getattr(one, field), getattr(scaled, field)
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, abs=1e-9)
    if not math.isnan(one.rel_mse):
        assert 0.0 <= one.rel_mse <= 1.0 + 1e-12
    if not math.isnan(one.spearman):
        assert -1.0 - 1e-12 <= one.spearman <= 1.0 + 1e-12


# ---------------------------------------------------------------- closed-form chain env


def _good(ep) -> list[bool]:
    return [t.action_text.strip() == "g" for t in ep.turns]


def test_chain_closed_form_by_hand():
    # p = 0.6, N = 3: good, bad, good -> V = [0.216, 0.36, 0, 0]; A* = [0.144, -0.36, 0]
    np.testing.assert_allclose(chain.chain_values([True, False, True], 0.6), [0.216, 0.36, 0.0, 0.0])
    np.testing.assert_allclose(chain.chain_advantages([True, False, True], 0.6), [0.144, -0.36, 0.0])
    np.testing.assert_allclose(chain.chain_advantages([True, True, True], 0.6), [0.144, 0.24, 0.4])


def test_truth_converges_to_closed_form_on_chain():
    collector = Collector(ScriptedPolicy.for_env(chain.ENV_ID, epsilon=EPS, seed=1), chain.ENV_ID, group_size=8)
    try:
        base = collector.collect(4, seed=3)
        truth = measure_truth(collector, base, branches=24)
    finally:
        collector.close()
    exact = np.asarray([a for ep in base for a in chain.chain_advantages(_good(ep), P_GOOD)])
    assert exact.shape == truth.adv_N.shape
    z = (truth.adv_N - exact) / np.maximum(truth.se_N, 1e-12)
    assert np.all(np.abs(z[truth.se_N == 0]) < 1e-9)  # no spread only where the value is certain
    assert float(np.mean(np.abs(z) < 3)) >= 0.95
    # pooled over turns with the same (turn, action, prefix) the truth is unbiased within 4 pooled SE
    cells: dict[tuple[float, ...], list[int]] = {}
    for i, key in enumerate(zip(truth.turn_N.tolist(), exact.tolist(), strict=True)):
        cells.setdefault(key, []).append(i)
    for idx in cells.values():
        diff = float(np.mean(truth.adv_N[idx] - exact[idx]))
        pooled = math.sqrt(float(np.sum(truth.se_N[idx] ** 2))) / len(idx)
        assert abs(diff) <= 4 * pooled + 1e-9


@pytest.fixture
def oracle():
    """A test estimator that returns the chain's closed-form advantages (read from the action tokens)."""
    g_id = ScriptedPolicy.for_env(chain.ENV_ID).tokenizer.encode("g")[0]

    @register_estimator("test_chain_oracle")
    def chain_oracle(batch):
        turn_BK = torch.zeros_like(batch.rewards_BK)
        for b in range(batch.turn_mask_BK.shape[0]):
            n = int(batch.turn_mask_BK[b].sum())
            good = []
            for k in range(n):
                first = int((batch.token_turn_BT[b] == k).nonzero()[0, 0])
                good.append(int(batch.ids_BT[b, first]) == g_id)
            turn_BK[b, :n] = torch.tensor(chain.chain_advantages(good, P_GOOD), dtype=turn_BK.dtype)
        return make_advantages(batch, turn_BK)

    yield "test_chain_oracle"
    ESTIMATORS.pop("test_chain_oracle", None)


def test_oracle_ranks_first_and_reaches_the_noise_ceiling(oracle):
    names = [oracle, "grpo", "rebn", "gigpo", "turn_return", "tree", "igpo"]
    report = measure_accuracy(chain.ENV_ID, episodes=48, group_size=8, branches=16, estimators=names, epsilon=EPS)
    rows = {r.name: r for r in report.rows}
    measured = [r for r in report.rows if r.skipped is None]
    assert max(measured, key=lambda r: r.spearman).name == oracle
    assert all(rows[oracle].spearman > r.spearman + 0.1 for r in measured if r.name != oracle)
    assert rows[oracle].rel_mse < min(r.rel_mse for r in measured if r.name != oracle)
    # the ceiling is what an exact estimator reaches against this noisy truth
    assert abs(rows[oracle].spearman - report.truth.ceiling_spearman) < 0.1
    assert rows["igpo"].skipped is not None and "--policy MODEL_DIR" in rows["igpo"].skipped
    assert rows["tree"].episodes_per_base > 1.0 and rows["tree"].trains_on_branches
    assert rows["grpo"].episodes_per_sample == 1.0
    assert report.table().splitlines()[4].startswith(f"| {oracle} |")


def test_same_seeds_give_the_same_report():
    kw = dict(episodes=8, group_size=4, branches=4, estimators=["grpo", "spo", "remax"], epsilon=EPS, seed=5)
    one, two = measure_accuracy(chain.ENV_ID, **kw), measure_accuracy(chain.ENV_ID, **kw)
    assert one.to_json(deterministic=True) == two.to_json(deterministic=True)
    other = measure_accuracy(chain.ENV_ID, **{**kw, "seed": 6})
    assert other.to_json(deterministic=True) != one.to_json(deterministic=True)


def test_a_saved_truth_is_reused_with_the_same_rows(tmp_path):
    """`truth_from` reads the episodes and truth a run saved and gives the same estimator rows and
    noise ceiling without collecting (the truth's cost is then 0 episodes)."""
    path = str(tmp_path / "truth.jsonl")
    kw = dict(episodes=16, group_size=4, estimators=["grpo", "rebn", "pvd"], epsilon=EPS, seed=3)
    first = measure_accuracy(chain.ENV_ID, branches=8, save_episodes=path, **kw)
    again = measure_accuracy(chain.ENV_ID, truth_from=path, **kw)
    rows = lambda r: [(x.name, x.spearman, x.pearson, x.sign_agree, x.rel_mse) for x in r.rows]
    assert rows(again) == rows(first)
    assert again.truth.ceiling_spearman == first.truth.ceiling_spearman and again.truth.branches == 8
    assert again.truth.episodes == 0 and again.config["truth_from"] == path
    greedy = measure_accuracy(chain.ENV_ID, truth_from=path, **{**kw, "estimators": ["remax"]})
    assert greedy.rows[0].skipped.startswith("needs greedy rollouts")
    saved = RolloutStore(path).read()
    assert all(set(e.meta["mc_truth"]) >= {"adv", "se", "value", "half1", "half2", "branches"} for e in saved)


def test_reannotate_replays_and_refuses_other_dynamics(tmp_path):
    """`reannotate` recomputes env annotations by replay; kwargs that change the rewards raise."""
    path = str(tmp_path / "truth.jsonl")
    measure_accuracy(chain.ENV_ID, episodes=4, group_size=4, branches=2, estimators=["grpo"], epsilon=EPS, save_episodes=path)
    saved = RolloutStore(path).read()
    again = reannotate(saved, chain.ENV_ID, None)
    assert [[t.info["abstract_state"] for t in e.turns] for e in again] == [[t.info["abstract_state"] for t in e.turns] for e in saved]
    with pytest.raises(ValueError, match="replay reward"):
        reannotate(saved, chain.ENV_ID, {"length": 5})
    bare = str(tmp_path / "bare.jsonl")
    RolloutStore(bare).extend([dataclasses.replace(e, meta={}) for e in saved])
    with pytest.raises(ValueError, match="--save-episodes"):
        measure_accuracy(chain.ENV_ID, truth_from=bare, estimators=["grpo"])


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="branches must be >= 2"):
        measure_accuracy(chain.ENV_ID, branches=1)
    with pytest.raises(KeyError, match="unknown estimator"):
        measure_accuracy(chain.ENV_ID, estimators=["no_such_estimator"])


def test_cli_bench_accuracy_prints_table_and_writes_json(tmp_path):
    from creditgym.cli import app

    out = tmp_path / "acc.json"
    args = ["bench", "accuracy", f"creditgym.benchmarks.accuracy_envs:{chain.ENV_ID}", "--epsilon", "0.8",
            "--episodes", "8", "--group-size", "4", "--branches", "4", "--estimators", "grpo,spo,siop",
            "--json", str(out), "--env-kwargs", '{"length": 2}', "--max-new-tokens", "8", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| grpo |" in result.output and "noise ceiling" in result.output
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["rows"]] == ["grpo", "spo", "siop"]
    assert data["config"]["env_kwargs"] == {"length": 2} and data["truth"]["mean_turns"] == 2.0
    assert data["config"]["sampling"]["max_new_tokens"] == 8 and data["config"]["critic"]["steps"] == 400
    assert data["rows"][2]["skipped"].startswith("needs a model policy")
    bad = CliRunner().invoke(app, ["bench", "accuracy", chain.ENV_ID, "--env-kwargs", "[1]"])
    assert bad.exit_code != 0


class _ModelLikeChainPolicy(ScriptedPolicy):
    """The chain's scripted policy posing as a model policy (a `model` attribute, zero log-probs)."""

    model = torch.nn.Identity()


def test_model_policy_runs_probe_estimators_and_skips_a_critic_without_a_network():
    """A policy with log-probabilities but no network a critic can copy: probes run, gae is skipped
    (tests/benchmarks/test_accuracy_critic.py measures critics with a network)."""
    policy = _ModelLikeChainPolicy(chain.ENV_ID, epsilon=EPS, seed=2)
    report = measure_accuracy(chain.ENV_ID, policy, episodes=8, group_size=4, branches=4, estimators=["siop", "gae", "grpo"])
    rows = {r.name: r for r in report.rows}
    assert rows["siop"].skipped is None and not math.isnan(rows["siop"].episodes_per_sample)
    assert rows["gae"].skipped is not None and "no base_model()" in rows["gae"].skipped
    assert rows["grpo"].skipped is None


def test_a_failing_estimator_becomes_a_row_not_a_crash():
    @register_estimator("test_accuracy_broken")
    def broken(batch):
        raise ValueError("estimator 'test_accuracy_broken' needs nothing it can get")

    try:
        report = measure_accuracy(chain.ENV_ID, episodes=4, group_size=4, branches=2, estimators=["test_accuracy_broken", "grpo"])
    finally:
        ESTIMATORS.pop("test_accuracy_broken", None)
    rows = {r.name: r for r in report.rows}
    assert rows["test_accuracy_broken"].skipped.startswith("failed: ValueError")
    assert rows["grpo"].skipped is None


def test_chain_env_passes_both_checkers():
    import gymnasium
    from gymnasium.utils.env_checker import check_env as gymnasium_check_env

    import creditgym
    from creditgym.benchmarks.accuracy_envs import ENV_ID

    creditgym.check_env(ENV_ID)
    gymnasium_check_env(gymnasium.make(ENV_ID).unwrapped, skip_render_check=True)
