"""Trainers on the row-token layout: per-turn (window) histories train one row per turn, the full
history one row per episode exactly as before (issue 16 item 3)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from _trainer_helpers import params_vector

from creditgym import CreditBatch

DEVICE = "creditgym/Device-v0"


def _device_episodes(policy: Any, history: str, n_groups: int = 2, **kw: Any) -> list[Any]:
    from creditgym.agents import Collector, Sampling

    col = Collector(policy, DEVICE, group_size=3, env_kwargs={"difficulty": 1, "max_turns": 4, "progress_shaping": True},
                    history=history,
                    sampling=Sampling(max_new_tokens=24), **kw)  # fmt: skip
    try:
        return col.collect(n_groups, seed=7)
    finally:
        col.close()


def _record_widths(policy: Any) -> list[int]:
    """Wrap the policy's forward passes; the returned list collects the width of every `ids` batch."""
    widths: list[int] = []
    for name in ("forward_logits", "forward_logits_at"):
        inner = getattr(policy, name, None)
        if inner is None:
            continue

        def spy(ids_BT: torch.Tensor, *a: Any, _inner: Any = inner, **k: Any) -> Any:
            widths.append(int(ids_BT.shape[1]))
            return _inner(ids_BT, *a, **k)

        setattr(policy, name, spy)
    return widths


@pytest.mark.parametrize("estimator", ["grpo", "gigpo", "rloo"])
def test_window_and_full_layouts_give_the_same_turn_advantages(estimator: str) -> None:
    """The same episodes (the random policy reads only raw texts, so both histories play the same
    actions) packed from a window and a full collection: equal [B, K] fields and turn advantages, and
    the window rows carry each action token's advantage from the episode layout."""
    from creditgym.agents import RandomPolicy
    from creditgym.credit import compute

    full = _device_episodes(RandomPolicy.for_env(DEVICE), "full", max_context_tokens=10**6)
    win = _device_episodes(RandomPolicy.for_env(DEVICE), "window:1")
    assert [[t.action_text for t in e.turns] for e in full] == [[t.action_text for t in e.turns] for e in win]
    assert all(e.per_turn_rows for e in win) and not any(e.per_turn_rows for e in full)
    b_full, b_win = CreditBatch.from_episodes(full), CreditBatch.from_episodes(win)
    for name in ("rewards_BK", "turn_mask_BK", "outcome_B", "group_B", "state_BK", "node_BK", "truncated_B"):
        assert torch.equal(getattr(b_full, name), getattr(b_win, name)), name
    a_full, a_win = compute(estimator, b_full), compute(estimator, b_win)
    assert bool(a_full.turn_BK.abs().sum() > 0)  # shaped rewards: informative advantages
    torch.testing.assert_close(a_full.turn_BK, a_win.turn_BK)
    assert b_win.R == sum(e.num_turns for e in win) and b_full.R == b_full.B
    # each action token's advantage, read off the rows, is its advantage in the episode layout
    want = [a_full.token_BT[e][b_full.token_turn_BT[e] >= 0].tolist() for e in range(b_full.B)]
    assert _row_action_values(b_win, a_win.token_BT) == want
    assert _row_action_values(b_full, a_full.token_BT) == want


def _row_action_values(batch: CreditBatch, x_BT: torch.Tensor) -> list[list[float]]:
    """Per episode, the values of `x_BT` at its action tokens, read in row order off the row layout."""
    x_RT = batch.to_rows(x_BT)
    out: list[list[float]] = [[] for _ in range(batch.B)]
    for r in range(batch.R):
        out[int(batch.row_episode_R[r])] += x_RT[r][batch.token_turn_RT[r] >= 0].tolist()
    return out


def test_row_logprobs_are_what_the_sampler_recorded(tiny_policy) -> None:
    """Token-in, token-out on rows: the trainer's recomputed logprobs of every action token, on the
    window rows, equal the sampling logprobs the Collector recorded (ratio 1 at the start)."""
    from creditgym.trainers.logprobs import row_logprobs

    eps = _device_episodes(tiny_policy, "window:1", n_groups=1)
    batch = CreditBatch.from_episodes(eps)
    assert batch.R > batch.B  # several turns, one row each
    assert int(batch.attention_mask_RT.sum(1).max()) < int(batch.attention_mask_BT.sum(1).max())
    lp_BT = row_logprobs(tiny_policy, batch, 1.0, batch.loss_mask_BT)
    m = batch.loss_mask_BT
    torch.testing.assert_close(lp_BT[m], batch.logprobs_BT[m], atol=2e-4, rtol=1e-4)


def test_grpo_step_on_device_in_window_mode(tiny_policy, tmp_path) -> None:
    from creditgym.store import RolloutStore
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    # KL and entropy on: the reference pass and the gradient run even when every reward ties
    cfg = GRPOConfig(steps=1, num_groups=1, group_size=2, max_new_tokens=8, lr=1e-3, tensorboard=False,
                     history="window:1", env_kwargs={"difficulty": 1, "max_turns": 3}, seed=1, kl_coef=0.01,
                     entropy_coef=0.01, out_dir=str(tmp_path))  # fmt: skip
    tr = GRPOTrainer(tiny_policy, DEVICE, cfg)
    widths = _record_widths(tiny_policy)
    before = params_vector(tiny_policy.model).clone()
    metrics = tr.step()
    eps = RolloutStore(tmp_path / "episodes.jsonl").read()
    assert len(eps) == 2 and all(e.history == "window:1" and e.num_turns >= 1 for e in eps)
    assert metrics["collector_truncated"] == 0.0
    for key in ("pg_loss", "kl_ref", "entropy", "grad_norm"):
        assert torch.isfinite(torch.tensor(metrics[key])), key
    assert metrics["tokens"] == float(sum(sum(t.action_loss_mask) for e in eps for t in e.turns))
    # every forward pass (policy and reference) ran on turn rows, never on a concatenated episode
    longest_turn = max(len(t.obs_ids) + len(t.action_ids) for e in eps for t in e.turns)
    assert widths and max(widths) <= longest_turn
    assert not torch.equal(before, params_vector(tiny_policy.model))


def test_full_history_update_is_unchanged_by_the_row_layout(tiny_cache) -> None:
    """One row per episode: the update from the row layout equals the update from the episode layout
    (the row fields removed, as a hand-built batch has them)."""
    from _trainer_helpers import build_tiny, expert_episodes

    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer
    from creditgym.trainers.update import policy_update

    vecs = []
    for drop_rows in (False, True):
        policy = build_tiny(tiny_cache)
        tr = GRPOTrainer(policy, "GuessNumber-v0", GRPOConfig(steps=1, lr=1e-2, tensorboard=False, mini_batches=2,
                                                             ppo_epochs=2))  # fmt: skip
        eps = expert_episodes(policy.tokenizer, n=8, group_size=4)
        batch, adv, mask_BT, ref_BT = tr._credit("agent", eps)
        if drop_rows:
            rows = {f.name: None for f in dataclasses.fields(batch) if f.name.endswith(("_RT", "_R"))}
            batch = dataclasses.replace(batch, **rows)
            assert batch.ids_RT is None
        out, skips = policy_update(tr.learners["agent"], batch, adv, mask_BT, ref_BT, tr.config, step=tr.step_idx,
                                   norm_const=None)  # fmt: skip
        assert skips == []
        assert torch.isfinite(torch.tensor(out["pg_loss"]))
        vecs.append(params_vector(policy.model))
    assert torch.equal(vecs[0], vecs[1])


def test_sft_on_window_episodes_trains_on_turn_rows(tiny_policy) -> None:
    """SFT warm starts from expert episodes collected with the window: each turn is its own row."""
    from creditgym.agents import ScriptedPolicy
    from creditgym.trainers.sft import SFTConfig, SFTTrainer

    expert = ScriptedPolicy.for_env(DEVICE, tokenizer=tiny_policy.tokenizer)
    eps = _device_episodes(expert, "window:1", n_groups=1)
    assert all(e.per_turn_rows for e in eps)
    widths = _record_widths(tiny_policy)
    tr = SFTTrainer(tiny_policy, SFTConfig(epochs=1, batch_episodes=len(eps), tensorboard=False), episodes=eps)
    loss = tr.accumulate_gradients(CreditBatch.from_episodes(eps))
    assert loss is not None and loss > 0
    assert widths and max(widths) <= max(len(t.obs_ids) + len(t.action_ids) for e in eps for t in e.turns)


def test_history_and_budget_flags_of_train_and_eval(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from creditgym.cli import app
    from creditgym.cli.train import config_from_flags
    from creditgym.trainers.grpo import GRPOConfig

    cfg = config_from_flags(GRPOConfig, ["--history", "window:2", "--max-context-tokens", "3000"])
    assert cfg.history == "window:2" and cfg.max_context_tokens == 3000
    res = CliRunner().invoke(app, ["train", "--list-flags"])
    assert "--history" in res.output and "--max-context-tokens" in res.output
    out = tmp_path / "eval.json"
    args = ["eval", DEVICE, "--scripted", "--n-eval", "2", "--difficulties", "easy", "--json-out", str(out)]
    res = CliRunner().invoke(app, [*args, "--history", "full", "--max-context-tokens", "1000"])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["success"] == 0.0  # the full history does not fit 1000 tokens
    res = CliRunner().invoke(app, [*args, "--history", "window"])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["success"] == 1.0


def test_trainer_reports_the_collector_truncated_fraction(tiny_policy) -> None:
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig(steps=1, num_groups=1, group_size=2, max_new_tokens=4, tensorboard=False, history="full",
                     max_context_tokens=100)  # fmt: skip
    tr = GRPOTrainer(tiny_policy, DEVICE, cfg, env_kwargs={"difficulty": 1})
    metrics = tr.step()
    assert metrics["collector_truncated"] == 1.0  # a Device screen alone outgrows the budget
