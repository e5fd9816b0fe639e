"""SFTTrainer: masked loss, micro-batching equals one batch, learning, RFT selection, exact resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _trainer_helpers import clone_policy, expert_episodes, params_vector

from creditgym import CreditBatch, Episode, Turn
from creditgym.trainers.sft import SFTConfig, SFTTrainer, rft_select


def test_masked_positions_get_exactly_zero_gradient(tiny_policy) -> None:
    eps = expert_episodes(tiny_policy.tokenizer, n=2)
    batch = CreditBatch.from_episodes(eps)
    logits = tiny_policy.forward_logits(batch.ids_BT, batch.attention_mask_BT).detach().requires_grad_(True)

    class Fixed:
        def forward_logits(self, ids, attn, logits_to_keep=0):
            return logits

    from creditgym.trainers.logprobs import forward_logprobs
    from creditgym.trainers.losses import sft_loss

    logp, _ = forward_logprobs(Fixed(), batch.ids_BT, batch.attention_mask_BT)
    sft_loss(logp, batch.loss_mask_BT).backward()
    # logits at t predict token t+1: rows whose next token is not trainable get no gradient
    predicts_masked = ~batch.loss_mask_BT[:, 1:]
    g = logits.grad[:, :-1].abs().sum(-1)
    assert float(g[predicts_masked].abs().max()) == 0.0
    assert float(g[~predicts_masked].sum()) > 0.0


def test_micro_batching_gives_the_same_step_as_one_batch(tiny_policy) -> None:
    eps = expert_episodes(tiny_policy.tokenizer, n=6)
    out = []
    for budget in (100_000, 40):
        p = clone_policy(tiny_policy)
        tr = SFTTrainer(p, SFTConfig(batch_episodes=6, token_budget=budget, lr=1e-2), episodes=eps)
        loss = tr.accumulate_gradients(CreditBatch.from_episodes(eps))
        grads = torch.cat([q.grad.flatten() for q in p.model.parameters() if q.grad is not None])
        out.append((grads, loss))
    assert out[0][1] == pytest.approx(out[1][1], abs=1e-5)
    assert torch.allclose(out[0][0], out[1][0], atol=1e-6)


def test_sft_lowers_the_loss_and_logs(tiny_policy, tmp_path: Path) -> None:
    eps = expert_episodes(tiny_policy.tokenizer, n=8)
    tr = SFTTrainer(tiny_policy, SFTConfig(batch_episodes=8, epochs=30, lr=3e-3, out_dir=str(tmp_path)), episodes=eps)
    first = tr.step()["loss"]
    summary = tr.train()
    assert summary["loss"] < 0.5 * first
    assert summary["steps"] == 30
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") >= 30
    assert any((tmp_path / "tb").iterdir())


def test_nan_loss_skips_the_update_and_counts(tiny_policy, caplog) -> None:
    eps = expert_episodes(tiny_policy.tokenizer, n=2)
    tr = SFTTrainer(tiny_policy, SFTConfig(batch_episodes=2), episodes=eps)
    with torch.no_grad():
        next(tiny_policy.model.parameters()).fill_(float("nan"))
    before = params_vector(tiny_policy.model).clone()
    m = tr.step()
    assert m["skipped"] == 1.0 and tr.skipped_steps == 1
    assert torch.equal(params_vector(tiny_policy.model).isnan(), before.isnan())
    assert "skipped" in caplog.text


def test_sft_needs_episodes(tiny_policy) -> None:
    with pytest.raises(ValueError, match="needs episodes"):
        SFTTrainer(tiny_policy, SFTConfig())
    with pytest.raises(ValueError, match="env_id"):
        SFTTrainer(tiny_policy, SFTConfig(rft_n=4))


def _ep(task: str, success: int, actions: tuple[str, ...]) -> Episode:
    turns = tuple(Turn(action_ids=(1,), action_text=a, reward=float(success) if i == len(actions) - 1 else 0.0) for i, a in enumerate(actions))
    return Episode(turns=turns, task_id=task, outcome={"success": float(success)})


def test_rft_select_worked_example() -> None:
    eps = [_ep("A", 1, ("x",)), _ep("A", 0, ("y",)), _ep("A", 1, ("x",)), _ep("A", 1, ("z",))]
    eps += [_ep("B", 0, (str(i),)) for i in range(4)]
    eps += [_ep("C", 1, (str(i),)) for i in range(4)]
    kept = rft_select(eps, k=4)
    assert [e.task_id for e in kept].count("A") == 2
    assert [e.task_id for e in kept].count("B") == 0
    assert [e.task_id for e in kept].count("C") == 4
    assert len(rft_select(eps, k=1)) == 2


RESUME_SCRIPT = r"""
import os, signal, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {helpers!r})
from pathlib import Path
from _trainer_helpers import build_tiny, expert_episodes, params_vector
from creditgym.trainers.sft import SFTConfig, SFTTrainer
out, kill_after = sys.argv[1], int(sys.argv[2])
policy = build_tiny(Path({cache!r}))
eps = expert_episodes(policy.tokenizer, n=12)
cfg = SFTConfig(batch_episodes=4, epochs=2, lr=5e-3, out_dir=out, checkpoint_every=2, resume=True, tensorboard=False)
tr = SFTTrainer(policy, cfg, episodes=eps)
while tr.step_idx < tr.total_steps:
    tr.step()
    if tr.step_idx == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
torch.save(params_vector(policy.model), Path(out) / "final.pt")
"""


def test_sigkill_then_resume_reaches_the_same_parameters(tiny_cache: Path, tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT.format(helpers=str(Path(__file__).parent), cache=str(tiny_cache)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    subprocess.run([sys.executable, str(script), str(ref), "-1"], check=True, env=env, timeout=240)
    killed = subprocess.run([sys.executable, str(script), str(cut), "3"], env=env, timeout=240)
    assert killed.returncode == -signal.SIGKILL
    assert (cut / "checkpoint.pt").is_file() and not (cut / "final.pt").exists()
    subprocess.run([sys.executable, str(script), str(cut), "-1"], check=True, env=env, timeout=240)
    a, b = torch.load(ref / "final.pt"), torch.load(cut / "final.pt")
    assert torch.equal(a, b)


def test_rft_samples_with_the_policy_filters_and_trains(tiny_policy) -> None:
    cfg = SFTConfig(rft_n=2, rft_groups=2, rft_k=1, rft_threshold=-1.0, max_new_tokens=6, epochs=1, batch_episodes=2,
                    env_kwargs={"max_turns": 2}, progress=False)
    tr = SFTTrainer(tiny_policy, cfg, env_id="creditgym/SearchEasy-v0")
    tr.train()
    # every episode was sampled by the policy itself (real logprobs), and at most rft_k per task were kept
    assert 1 <= len(tr.episodes) <= cfg.rft_groups * cfg.rft_k
    assert len({e.task_id for e in tr.episodes}) == len(tr.episodes)
    assert all(lp < 0 for e in tr.episodes for t in e.turns for lp in t.action_logprobs)
    assert tr.step_idx == tr.total_steps
