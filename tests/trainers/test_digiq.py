"""DigiQTrainer (METHODS.md 7): worked examples, the three phases end to end, the Q ranking of the
expert action over a random one, and exact resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _trainer_helpers import build_tiny, params_vector
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym.agents.offline import collect_offline
from creditgym.envs.device import DEVICE
from creditgym.trainers.digiq import (
    DigiQConfig,
    DigiQTrainer,
    best_of_n,
    device_action_valid,
    td_targets,
    transitions,
)
from creditgym.trainers.value_heads import MLPHead, polyak_

KW = {"difficulty": 1, "max_turns": 5}


def test_worked_example_targets_extraction_and_polyak() -> None:
    """r 0, gamma 0.95, Vbar(s') 0.6 -> Q target 0.57; candidates Q = (0.40, 0.55, 0.62, 0.30), V 0.5 ->
    adv (-0.10, 0.05, 0.12, -0.20), j* = 2, a = 0.12: imitated at thr 0.10, skipped at 0.15; Polyak with
    tau 0.1 from 0 towards 1: 0.1, 0.19, 0.271."""
    y = td_targets(torch.tensor([0.0]), torch.tensor([False]), torch.tensor([[0.6, 0.6]]), 0.95)
    torch.testing.assert_close(y, torch.tensor([[0.57, 0.57]]))
    assert td_targets(torch.tensor([1.0]), torch.tensor([True]), torch.tensor([[0.6, 0.6]]), 0.95).tolist() == [[1.0, 1.0]]
    q = torch.tensor([[0.40, 0.55, 0.62, 0.30]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    j, a, imitate = best_of_n(q, torch.tensor([0.5]), valid, 0.10)
    assert int(j) == 2 and float(a) == pytest.approx(0.12) and bool(imitate)
    assert not bool(best_of_n(q, torch.tensor([0.5]), valid, 0.15)[2])
    # an invalid best candidate gets advantage 0, so the next best wins
    j2, a2, _ = best_of_n(q, torch.tensor([0.5]), torch.tensor([[True, True, False, True]]), 0.0)
    assert int(j2) == 1 and float(a2) == pytest.approx(0.05)
    online, target = MLPHead(1, 2, 1), MLPHead(1, 2, 1)
    with torch.no_grad():
        for p in online.parameters():
            p.fill_(1.0)
        for p in target.parameters():
            p.fill_(0.0)
    seen = []
    for _ in range(3):
        polyak_(target, online, 0.1)
        seen.append(float(next(target.parameters()).detach().flatten()[0]))
    assert seen == pytest.approx([0.1, 0.19, 0.271])


def test_transitions_label_screen_changes_and_done() -> None:
    eps = collect_offline(DEVICE, n_expert=2, n_noisy=0, n_random=1, env_kwargs=KW)
    data = transitions(eps)
    assert len(data) == sum(e.num_turns for e in eps)
    expert = transitions(eps[:1])
    assert expert[-1].done and expert[-1].changed is None and not any(t.done for t in expert[:-1])
    assert all(t.changed for t in expert[:-1])  # each expert step before the last moves the screen
    assert device_action_valid(expert[0].action) and not device_action_valid("tap somewhere")


@pytest.fixture(scope="module")
def offline(tiny_cache: Path):
    policy = build_tiny(tiny_cache)
    return collect_offline(DEVICE, n_expert=6, n_noisy=6, n_random=6, tokenizer=policy.tokenizer, env_kwargs=KW, seed=2)


def test_three_phases_run_and_train_what_they_should(tiny_cache: Path, offline) -> None:
    policy = build_tiny(tiny_cache)
    before = params_vector(policy.model)
    cfg = DigiQConfig(repr_batch=32, critic_epochs=2, critic_batch=16, n_candidates=2, max_new_tokens=6,
                      actor_steps=2, actor_batch_states=8, thr=-1.0, tensorboard=False)  # fmt: skip
    tr = DigiQTrainer(policy, DEVICE, cfg, episodes=offline)
    assert tr.total_steps == tr.repr_steps + 2 + 2
    for _ in range(tr.repr_steps):
        m = tr.step()
        assert "repr/loss" in m
    assert torch.equal(params_vector(policy.model), before)  # phase 1 trains the copy only
    q_before = params_vector(tr.q_target)
    m = tr.step()
    assert {"critic/q_loss", "critic/v_loss"} <= set(m)
    assert not torch.equal(params_vector(tr.q_target), q_before)  # Polyak moved the targets
    tr.step()
    m = tr.step()
    assert len(tr.candidates) == len(tr.data) and all(len(c) == 2 for c in tr.candidates)
    assert all(c[0][1] == t.action for c, t in zip(tr.candidates, tr.data))  # the dataset action is candidate 0
    assert m["actor/imitated_frac"] == 1.0 and not torch.equal(params_vector(policy.model), before)


def test_q_ranks_the_expert_action_above_a_random_one_on_held_out_states(tiny_cache: Path) -> None:
    """METHODS.md 7 behaviour on a tiny problem: on held-out (test-split) states, Q prefers the
    expert's action to a random valid one clearly more often than chance."""
    policy = build_tiny(tiny_cache)
    data = collect_offline(DEVICE, n_expert=12, n_noisy=12, n_random=12, tokenizer=policy.tokenizer, env_kwargs=KW, seed=0)
    held = collect_offline(DEVICE, n_expert=8, n_noisy=0, n_random=0, tokenizer=policy.tokenizer,
                           env_kwargs={**KW, "split": "test"}, seed=1)  # fmt: skip
    cfg = DigiQConfig(repr_batch=16, critic_epochs=30, actor_steps=0, tensorboard=False)
    tr = DigiQTrainer(policy, DEVICE, cfg, episodes=data)
    tr.train()
    acc = tr.q_ranking(held)
    assert acc > 0.7, acc


RESUME_SCRIPT = """
import os, signal, sys
from pathlib import Path
import torch
sys.path.insert(0, {helpers!r})
from _trainer_helpers import build_tiny, params_vector
from creditgym.agents.offline import collect_offline
from creditgym.envs.device import DEVICE
from creditgym.trainers.digiq import DigiQConfig, DigiQTrainer
torch.set_num_threads(1)
out, kill_after = sys.argv[1], int(sys.argv[2])
kw = {{"difficulty": 1, "max_turns": 4}}
policy = build_tiny(Path({cache!r}))
data = collect_offline(DEVICE, n_expert=2, n_noisy=2, n_random=2, tokenizer=policy.tokenizer, env_kwargs=kw, seed=5)
cfg = DigiQConfig(repr_batch=8, critic_epochs=2, critic_batch=8, n_candidates=2, max_new_tokens=5, actor_steps=2,
                  actor_batch_states=4, thr=-1.0, out_dir=out, checkpoint_every=1, resume=True, tensorboard=False)
tr = DigiQTrainer(policy, DEVICE, cfg, episodes=data)
while tr.step_idx < tr.total_steps:
    tr.step()
    if tr.step_idx == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
state = torch.cat([params_vector(policy.model), params_vector(tr.repr_policy.model), params_vector(tr.q), params_vector(tr.v_target)])
torch.save(state, Path(out) / "final.pt")
"""


@pytest.mark.parametrize("kill_after", [1, -2])
def test_sigkill_then_resume_reaches_the_same_state(tiny_cache: Path, tmp_path: Path, kill_after: int) -> None:
    """Killed in phase 1 (after step 1) or in phase 3 (after the first actor step)."""
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT.format(helpers=str(Path(__file__).parent), cache=str(tiny_cache)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    subprocess.run([sys.executable, str(script), str(ref), "-1"], check=True, env=env, timeout=300)
    kill = kill_after if kill_after > 0 else 1000
    if kill_after < 0:  # count back from the end: read the step count from the reference's metrics
        kill = len((ref / "metrics.jsonl").read_text().splitlines()) + kill_after + 1
    killed = subprocess.run([sys.executable, str(script), str(cut), str(kill)], env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert (cut / "checkpoint.pt").is_file() and not (cut / "final.pt").exists()
    subprocess.run([sys.executable, str(script), str(cut), "-1"], check=True, env=env, timeout=300)
    assert torch.equal(torch.load(ref / "final.pt"), torch.load(cut / "final.pt"))


@settings(max_examples=50, deadline=None)
@given(
    q=st.lists(st.floats(-2, 2), min_size=6, max_size=6),
    v=st.lists(st.floats(-2, 2), min_size=2, max_size=2),
    valid=st.lists(st.booleans(), min_size=6, max_size=6),
    thr=st.floats(0, 1),
)
def test_best_of_n_properties(q: list[float], v: list[float], valid: list[bool], thr: float) -> None:
    """The chosen candidate has the largest advantage (invalid ones count 0), a lies in [0, 1], and an
    imitated state's chosen candidate is always a valid one with q - v > thr."""
    q_SN, v_S, valid_SN = torch.tensor(q).view(2, 3), torch.tensor(v), torch.tensor(valid).view(2, 3)
    j, a, imitate = best_of_n(q_SN, v_S, valid_SN, thr)
    adv = torch.where(valid_SN, q_SN - v_S[:, None], torch.zeros_like(q_SN))
    for s in range(2):
        assert float(adv[s, j[s]]) == float(adv[s].max())
        assert 0.0 <= float(a[s]) <= 1.0
        if bool(imitate[s]):
            assert bool(valid_SN[s, j[s]]) and float(q_SN[s, j[s]] - v_S[s]) > thr
