"""GRPOTrainer with the real Collector on a small in-test env: plumbing, learning, needs, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _trainer_helpers import LETTER_ENV_ID, LetterEnv, params_vector

ENV_ID = LETTER_ENV_ID
__all__ = ["ENV_ID", "LetterEnv"]  # the resume script below loads both from this module


@pytest.fixture(scope="module", autouse=True)
def letter_env() -> None:
    import gymnasium

    if ENV_ID not in gymnasium.registry:
        gymnasium.register(ENV_ID, entry_point=LetterEnv)


def _cfg(**kw: Any):
    from creditgym.trainers.grpo import GRPOConfig

    base = dict(steps=2, num_groups=2, group_size=4, max_new_tokens=6, lr=1e-3, tensorboard=False)
    base.update(kw)
    return GRPOConfig(**base)


def test_grpo_round_runs_and_logs(tiny_policy, tmp_path: Path) -> None:
    from creditgym.trainers.grpo import GRPOTrainer

    tr = GRPOTrainer(tiny_policy, ENV_ID, _cfg(estimator="grpo", out_dir=str(tmp_path), tensorboard=True))
    before = params_vector(tiny_policy.model).clone()
    summary = tr.train()
    assert summary["steps"] == 2
    for key in ("reward", "success", "pg_loss", "grad_norm", "clipfrac", "tokens", "time/rollout_s", "time/update_s"):
        assert key in tr.history[-1], key
    assert tr.history[0]["clipfrac"] == 0.0  # first (and only) epoch is exactly on-policy
    assert not torch.equal(before, params_vector(tiny_policy.model))
    assert (tmp_path / "episodes.jsonl").read_text().count("\n") == 2 * 2 * 4
    assert any((tmp_path / "tb").iterdir())


def test_grpo_linear_schedule_plans_every_optimizer_step(tiny_policy) -> None:
    from creditgym.trainers.grpo import GRPOTrainer

    tr = GRPOTrainer(tiny_policy, ENV_ID, _cfg(steps=2, mini_batches=2, lr_schedule="linear"))
    sched = tr.learners["agent"].scheduler
    assert [sched.lr_lambdas[0](s) for s in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_grpo_refuses_critic_estimators(tiny_policy) -> None:
    from creditgym.trainers.grpo import GRPOTrainer

    with pytest.raises(ValueError, match="PPOTrainer"):
        GRPOTrainer(tiny_policy, ENV_ID, _cfg(estimator="gae"))


def test_grpo_user_estimator_needs_drive_collection(tiny_policy) -> None:
    from creditgym.credit import register_estimator
    from creditgym.credit.advantages import Advantages
    from creditgym.trainers.grpo import GRPOTrainer

    seen: dict[str, Any] = {}

    @register_estimator("trainer_test_greedy", needs={"greedy": True})
    def greedy_est(batch, scale: float = 1.0):
        seen["greedy"] = batch.greedy_return_B
        adv_BK = (batch.rewards_BK - batch.greedy_return_B[:, None]) * batch.turn_mask_BK * scale
        tok = adv_BK.gather(1, batch.token_turn_BT.clamp_min(0)) * batch.loss_mask_BT
        return Advantages(turn_BK=adv_BK, token_BT=tok, metrics={"mean": float(adv_BK.mean())})

    tr = GRPOTrainer(tiny_policy, ENV_ID, _cfg(estimator="trainer_test_greedy", estimator_cfg={"scale": 2.0}, steps=1))
    tr.train()
    assert seen["greedy"] is not None and bool(torch.isfinite(seen["greedy"]).all())
    assert "adv/mean" in tr.history[-1]


def test_kl_to_reference_and_entropy_are_logged(tiny_policy) -> None:
    from creditgym.trainers.grpo import GRPOTrainer

    tr = GRPOTrainer(tiny_policy, ENV_ID, _cfg(kl_coef=0.1, entropy_coef=0.01, ppo_epochs=2, mini_batches=2, steps=1))
    tr.train()
    m = tr.history[-1]
    assert m["kl_ref"] >= 0.0 and m["entropy"] > 0.0


def test_lora_reference_is_adapters_off(tiny_cache: Path) -> None:
    from _trainer_helpers import build_tiny

    from creditgym.trainers.grpo import GRPOTrainer

    policy = build_tiny(tiny_cache)
    tr = GRPOTrainer(policy, ENV_ID, _cfg(lora=True, kl_coef=0.05, steps=1, lr=1e-2))
    assert policy.has_adapter and tr._refs == {}
    n_trainable = sum(p.numel() for p in policy.model.parameters() if p.requires_grad)
    assert n_trainable < sum(p.numel() for p in policy.model.parameters()) / 2
    tr.train()
    assert "kl_ref" in tr.history[-1]


def test_nan_advantages_skip_the_update(tiny_policy, caplog) -> None:
    from creditgym.credit import register_estimator
    from creditgym.credit.advantages import Advantages
    from creditgym.trainers.grpo import GRPOTrainer

    @register_estimator("trainer_test_nan")
    def nan_est(batch):
        return Advantages(
            turn_BK=torch.full_like(batch.rewards_BK, float("nan")),
            token_BT=torch.full(batch.loss_mask_BT.shape, float("nan")),
            metrics={},
        )

    tr = GRPOTrainer(tiny_policy, ENV_ID, _cfg(estimator="trainer_test_nan", steps=1))
    before = params_vector(tiny_policy.model).clone()
    tr.train()
    assert tr.skipped_steps == 1 and torch.equal(before, params_vector(tiny_policy.model))
    assert "NaN" in caplog.text


@pytest.mark.parametrize(("agg", "extra"), [("token-mean", {}), ("seq-mean-token-mean", {}),
                                           ("token-mean", {"ppo_epochs": 2, "mini_batches": 2})])  # fmt: skip
def test_skipping_zero_advantage_rows_leaves_the_update_unchanged(tiny_cache: Path, agg: str, extra: dict) -> None:
    """Rows with all-zero advantages are left out of the passes; parameters after the step match the
    full pass (same rollouts, same normalisers), and the skipped fraction is logged. With several
    epochs or mini-batches the old logprobs of the ratio are recomputed on the informative rows only."""
    from _trainer_helpers import build_tiny

    from creditgym.credit import register_estimator
    from creditgym.credit.advantages import Advantages
    from creditgym.trainers.grpo import GRPOTrainer

    @register_estimator("trainer_test_half_zero")
    def half_zero(batch):
        keep_B = (torch.arange(batch.B) % 2 == 0).to(batch.rewards_BK.dtype)
        adv_BK = (batch.rewards_BK - 0.3) * batch.turn_mask_BK * keep_B[:, None]
        tok = adv_BK.gather(1, batch.token_turn_BT.clamp_min(0)) * batch.loss_mask_BT
        return Advantages(turn_BK=adv_BK, token_BT=tok, metrics={})

    params, norms = [], []
    for skip in (True, False):
        policy = build_tiny(tiny_cache)
        tr = GRPOTrainer(policy, ENV_ID, _cfg(estimator="trainer_test_half_zero", steps=1, token_budget=64,
                                              skip_zero_adv_rows=skip, loss_agg=agg, **extra))  # fmt: skip
        tr.train()
        params.append(params_vector(policy.model))
        norms.append(tr.history[-1]["grad_norm"])
        if skip:
            assert tr.history[-1]["update/zero_adv_rows_frac"] == pytest.approx(0.5)
    assert not torch.equal(params[0], params_vector(build_tiny(tiny_cache).model))
    torch.testing.assert_close(params[0], params[1], rtol=0, atol=1e-6)
    assert norms[0] == pytest.approx(norms[1], rel=1e-5)  # Adam hides a scale error; the norm does not


def test_all_zero_advantage_round_skips_the_passes_but_not_the_adam_step(tiny_cache: Path) -> None:
    """A round whose rows all have zero advantages runs no forward/backward; the optimizer still steps
    on zero gradients (Adam's momentum moves the weights), exactly as after the full pass."""
    from _trainer_helpers import build_tiny

    from creditgym.credit import register_estimator
    from creditgym.credit.advantages import Advantages
    from creditgym.trainers.grpo import GRPOTrainer

    calls: list[int] = []

    @register_estimator("trainer_test_zero_second")
    def zero_second(batch):
        calls.append(1)
        scale = 1.0 if len(calls) % 2 == 1 else 0.0  # informative first round, all-zero second round
        adv_BK = (batch.rewards_BK - 0.3) * batch.turn_mask_BK * scale
        tok = adv_BK.gather(1, batch.token_turn_BT.clamp_min(0)) * batch.loss_mask_BT
        return Advantages(turn_BK=adv_BK, token_BT=tok, metrics={})

    params, fracs = [], []
    for skip in (True, False):
        policy = build_tiny(tiny_cache)
        tr = GRPOTrainer(policy, ENV_ID, _cfg(estimator="trainer_test_zero_second", steps=2, skip_zero_adv_rows=skip))
        after_first = None
        while tr.step_idx < tr.total_steps:
            tr.step()
            after_first = params_vector(policy.model) if after_first is None else after_first
        params.append(params_vector(policy.model))
        assert not torch.equal(params[-1], after_first)  # momentum moved the weights in round 2
        fracs.append(tr.history[-1].get("update/zero_adv_rows_frac"))
    torch.testing.assert_close(params[0], params[1], rtol=0, atol=1e-6)
    assert fracs == [1.0, None]


def test_dynamic_sampling_keeps_only_informative_groups(tiny_policy) -> None:
    from creditgym.trainers.grpo import GRPOTrainer

    tr = GRPOTrainer(tiny_policy, ENV_ID, _cfg(dynamic_sampling=True, steps=1))
    eps, m = tr.collect()
    assert m["ds/gen_rounds"] >= 1 and 0 < m["ds/kept_frac"] <= 1
    groups: dict[str, list[float]] = {}
    for e in eps:
        groups.setdefault(e.group_id, []).append(e.total_reward)
    assert len(groups) == 2 and all(max(r) > min(r) for r in groups.values())


def test_grpo_raises_the_reward_on_the_letter_task(tiny_policy) -> None:
    from creditgym.trainers.grpo import GRPOTrainer

    tr = GRPOTrainer(tiny_policy, ENV_ID, _cfg(steps=14, num_groups=4, group_size=6, lr=2e-2, max_new_tokens=4))
    tr.train()
    first = np.mean([h["reward"] for h in tr.history[:3]])
    last = np.mean([h["reward"] for h in tr.history[-3:]])
    assert last > first + 0.1


RESUME_SCRIPT = r"""
import os, signal, sys, torch, gymnasium
torch.set_num_threads(1)
sys.path.insert(0, {helpers!r})
from pathlib import Path
from _trainer_helpers import build_tiny, params_vector
import importlib.util
spec = importlib.util.spec_from_file_location("grpo_test_mod", {testfile!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
gymnasium.register(mod.ENV_ID, entry_point=mod.LetterEnv)
from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer
out, kill_after = sys.argv[1], int(sys.argv[2])
policy = build_tiny(Path({cache!r}))
cfg = GRPOConfig(steps=5, num_groups=2, group_size=3, max_new_tokens=5, lr=1e-3, out_dir=out, checkpoint_every=2,
                 resume=True, tensorboard=False, seed=3)
tr = GRPOTrainer(policy, mod.ENV_ID, cfg)
while tr.step_idx < tr.total_steps:
    tr.step()
    if tr.step_idx == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
torch.save(params_vector(policy.model), Path(out) / "final.pt")
"""


@pytest.mark.slow
def test_grpo_sigkill_then_resume_is_exact(tiny_cache: Path, tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT.format(helpers=str(Path(__file__).parent), cache=str(tiny_cache), testfile=__file__))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    subprocess.run([sys.executable, str(script), str(ref), "-1"], check=True, env=env, timeout=300)
    killed = subprocess.run([sys.executable, str(script), str(cut), "3"], env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    subprocess.run([sys.executable, str(script), str(cut), "-1"], check=True, env=env, timeout=300)
    assert torch.equal(torch.load(ref / "final.pt"), torch.load(cut / "final.pt"))


def test_ppo_token_and_turn_gae_train_policy_and_critic(tiny_policy) -> None:
    from creditgym.trainers.ppo import PPOConfig, PPOTrainer

    for level in ("token", "turn"):
        cfg = PPOConfig(steps=2, num_groups=2, group_size=3, max_new_tokens=4, lr=1e-3, tensorboard=False,
                        estimator_cfg={"level": level, "gamma": 1.0, "lam": 0.95})
        tr = PPOTrainer(tiny_policy, ENV_ID, cfg)
        head_before = tr.critics["agent"].model.head.weight.detach().clone()
        tr.train()
        m = tr.history[-1]
        assert "vf_loss" in m and "explained_variance" in m and "pg_loss" in m
        assert not torch.equal(head_before, tr.critics["agent"].model.head.weight.detach())


def test_ppo_refuses_critic_free_estimators(tiny_policy) -> None:
    from creditgym.trainers.ppo import PPOConfig, PPOTrainer

    with pytest.raises(ValueError, match="GRPOTrainer"):
        PPOTrainer(tiny_policy, ENV_ID, PPOConfig(estimator="grpo", estimator_cfg={}))


def test_turn_values_from_tokens_hand_example() -> None:
    from creditgym.trainers.ppo import turn_values_from_tokens

    v_BT = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    tt_BT = torch.tensor([[-1, 0, 0, -1, 1, 1]])
    mask_BK = torch.tensor([[True, True, False]])
    out = turn_values_from_tokens(v_BT, tt_BT, mask_BK, torch.tensor([True]), torch.tensor([9.0]))
    assert out.tolist() == [[1.0, 4.0, 9.0]]


def test_close_releases_what_the_trainer_built_and_not_what_it_was_given(tiny_policy, monkeypatch) -> None:
    from creditgym.agents.rollout import Collector
    from creditgym.trainers.grpo import GRPOTrainer

    closed: list[Collector] = []
    monkeypatch.setattr(Collector, "close", lambda self: closed.append(self))
    with GRPOTrainer(tiny_policy, ENV_ID, _cfg(steps=1)) as tr:
        tr.train()
        assert closed == []
    assert closed == [tr.collector]
    tr.close()  # idempotent
    assert closed == [tr.collector]
    given = Collector(tiny_policy, ENV_ID, group_size=4)
    closed.clear()
    with GRPOTrainer(tiny_policy, ENV_ID, _cfg(steps=1), collector=given) as tr2:
        tr2.train()
    assert closed == [] and tr2.collector is given
