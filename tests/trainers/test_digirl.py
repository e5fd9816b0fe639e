"""DigiRLTrainer (METHODS.md 6): the curriculum's worked example, actor weights, the critics, one
offline and one online iteration end to end, and exact resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _trainer_helpers import build_tiny, params_vector

from creditgym.agents.offline import collect_offline
from creditgym.envs.device import DEVICE
from creditgym.trainers.digirl import DigiRLConfig, DigiRLTrainer, curriculum_keep, filtered_bc, step_weights
from creditgym.trainers.value_heads import binary_auc

KW = {"difficulty": 1, "max_turns": 6}


def test_curriculum_worked_example() -> None:
    """r = (1,0,1,0,1), V_inst = (0.9,0.1,0.2,0.5,0.6) -> A_inst = (0.1,-0.1,0.8,-0.5,0.4); the
    0.9-quantile is 0.64 (linear interpolation) -> keep trajectory 2 only."""
    r = torch.tensor([1.0, 0, 1, 0, 1])
    v = torch.tensor([0.9, 0.1, 0.2, 0.5, 0.6])
    assert float(torch.quantile((r - v).double(), 0.9)) == pytest.approx(0.64)
    assert curriculum_keep(r, v, 0.9).tolist() == [False, False, True, False, False]
    assert curriculum_keep(r, v, None).all()


def test_step_weights_filter_and_awr() -> None:
    adv = torch.tensor([[0.325, 0.65, 1.0], [-0.075, 0.15, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    assert step_weights(adv, mask, "filter").tolist() == [[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]
    awr = step_weights(adv, mask, "awr", beta=0.5, cap=2.0)
    torch.testing.assert_close(awr, torch.tensor([[1.915541, 2.0, 2.0], [0.860708, 1.349859, 0.0]]))


def test_filtered_bc_keeps_the_successes() -> None:
    eps = collect_offline(DEVICE, n_expert=2, n_noisy=0, n_random=3, env_kwargs=KW)
    kept = filtered_bc(eps, 0.9)
    assert [e.meta["offline"]["source"] for e in kept] == ["expert", "expert"]


@pytest.fixture(scope="module")
def offline_data(tiny_cache: Path):
    policy = build_tiny(tiny_cache)
    return collect_offline(DEVICE, n_expert=6, n_noisy=6, n_random=6, tokenizer=policy.tokenizer, env_kwargs=KW, seed=3)


def test_offline_then_online_iteration(tiny_cache: Path, offline_data) -> None:
    policy = build_tiny(tiny_cache)
    before = params_vector(policy.model)
    cfg = DigiRLConfig(offline_iterations=1, online_iterations=1, episodes_per_iteration=3, actor_steps=2,
                       actor_batch_episodes=4, critic_epochs=2, curriculum_quantile=0.5, max_new_tokens=8,
                       env_kwargs=KW, tensorboard=False, lr=1e-3)  # fmt: skip
    tr = DigiRLTrainer(policy, DEVICE, cfg, episodes=offline_data)
    frozen = params_vector(tr.feature_model)
    m1 = tr.step()
    assert m1["online"] == 0.0 and len(tr.buffer) == 18 and m1["curriculum/kept"] >= 9
    assert m1["actor/imitated_frac"] > 0 and not torch.equal(params_vector(policy.model), before)
    m2 = tr.step()
    assert m2["online"] == 1.0 and len(tr.buffer) == 21  # the new episodes joined the replay buffer
    assert torch.equal(params_vector(tr.feature_model), frozen)  # the critics' features stay frozen
    v = tr.step_values(tr.buffer[0])
    assert v.shape == (tr.buffer[0].num_turns + 1,) and bool(((v > 0) & (v < 1)).all())


def test_replay_buffer_drops_the_oldest_beyond_capacity(tiny_cache: Path, offline_data) -> None:
    cfg = DigiRLConfig(replay_capacity_steps=20, env_kwargs=KW, tensorboard=False)
    tr = DigiRLTrainer(build_tiny(tiny_cache), DEVICE, cfg, episodes=offline_data)
    assert sum(e.num_turns for e in tr.buffer) <= 20
    assert tr.buffer[-1].episode_id == offline_data[-1].episode_id


def test_step_critic_ranks_success_states_above_failures_on_held_out_episodes(tiny_cache: Path) -> None:
    """METHODS.md 6 behaviour: after the offline critic fit, V_step ranks the states of successful
    held-out episodes above those of failed ones (AUC > 0.8)."""
    policy = build_tiny(tiny_cache)
    kw = {"difficulty": 1, "max_turns": 6}
    train = collect_offline(DEVICE, n_expert=16, n_noisy=16, n_random=16, tokenizer=policy.tokenizer, env_kwargs=kw, seed=0)
    held = collect_offline(DEVICE, n_expert=8, n_noisy=8, n_random=8, tokenizer=policy.tokenizer,
                           env_kwargs={**kw, "split": "test"}, seed=1)  # fmt: skip
    cfg = DigiRLConfig(critic_epochs=40, env_kwargs=kw, tensorboard=False)
    tr = DigiRLTrainer(policy, DEVICE, cfg, episodes=train)
    tr.fit_critics()
    scores, labels = [], []
    for e in held:
        v = tr.step_values(e)[: e.num_turns]
        scores += v.tolist()
        labels += [e.outcome["success"] > 0] * e.num_turns
    auc = binary_auc(torch.tensor(scores), torch.tensor(labels))
    assert auc > 0.8, auc


RESUME_SCRIPT = """
import os, signal, sys
from pathlib import Path
import torch
sys.path.insert(0, {helpers!r})
from _trainer_helpers import build_tiny, params_vector
from creditgym.agents.offline import collect_offline
from creditgym.envs.device import DEVICE
from creditgym.trainers.digirl import DigiRLConfig, DigiRLTrainer
torch.set_num_threads(1)
out, kill_after = sys.argv[1], int(sys.argv[2])
kw = {{"difficulty": 1, "max_turns": 4}}
policy = build_tiny(Path({cache!r}))
data = collect_offline(DEVICE, n_expert=3, n_noisy=3, n_random=2, tokenizer=policy.tokenizer, env_kwargs=kw, seed=5)
cfg = DigiRLConfig(offline_iterations=1, online_iterations=2, episodes_per_iteration=2, actor_steps=1,
                   actor_batch_episodes=3, critic_epochs=1, curriculum_quantile=0.5, max_new_tokens=6, env_kwargs=kw,
                   lr=1e-3, out_dir=out, checkpoint_every=1, resume=True, tensorboard=False)
tr = DigiRLTrainer(policy, DEVICE, cfg, episodes=data)
while tr.step_idx < tr.total_steps:
    tr.step()
    if tr.step_idx == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
state = torch.cat([params_vector(policy.model), params_vector(tr.v_step), params_vector(tr.v_inst)])
buffer = [[t.action_text for t in e.turns] for e in tr.buffer]
torch.save({{"params": state, "buffer": buffer}}, Path(out) / "final.pt")
"""


def test_sigkill_then_resume_reaches_the_same_state(tiny_cache: Path, tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT.format(helpers=str(Path(__file__).parent), cache=str(tiny_cache)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    subprocess.run([sys.executable, str(script), str(ref), "-1"], check=True, env=env, timeout=300)
    killed = subprocess.run([sys.executable, str(script), str(cut), "2"], env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert (cut / "checkpoint.pt").is_file() and not (cut / "final.pt").exists()
    subprocess.run([sys.executable, str(script), str(cut), "-1"], check=True, env=env, timeout=300)
    a, b = torch.load(ref / "final.pt"), torch.load(cut / "final.pt")
    assert a["buffer"] == b["buffer"]
    assert torch.equal(a["params"], b["params"])
