"""creditgym.integrations.trl: creditgym envs and credit inside TRL's GRPOTrainer (CPU, tiny model)."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from trl import GRPOConfig

from creditgym import Episode
from creditgym.integrations.trl import check_trl_compatible, cut_at_stop, episode_rollout

from .trl_run import completion_advantages, make_trainer


def assert_optimised_equal(ids_BT: torch.Tensor, adv_BT: torch.Tensor, episodes: list[Episode]) -> None:
    """Each row the loss saw (in TRL's shuffled order) has the advantages `credit.compute` gives the episode
    with its completion tokens."""
    expected = completion_advantages(episodes)
    completions = [episode_rollout(ep)["completion_ids"] for ep in episodes]
    assert ids_BT.shape[0] == len(episodes)
    for ids, adv in zip(ids_BT.tolist(), adv_BT):
        b = next(b for b, c in enumerate(completions) if ids[: len(c)] == c)
        torch.testing.assert_close(adv[: len(expected[b])], torch.tensor(expected[b]), rtol=0, atol=0)
        assert not adv[len(expected[b]) :].any()


def test_two_step_run_through_trls_generation_backend():
    trainer = make_trainer(per_device=2, steps=2, expert_seed=None, group=2)
    trainer.train()
    assert trainer.state.global_step == 2 and len(trainer.optimised) == 2
    eps = trainer.last_episodes
    assert len(eps) == 2 and len({ep.group_id for ep in eps}) == 1  # one task, num_generations copies
    assert all(ep.num_turns >= 1 for ep in eps)
    ro = episode_rollout(eps[0])
    assert ro["prompt_ids"] == list(eps[0].turns[0].obs_ids)
    assert len(ro["completion_ids"]) == len(ro["env_mask"]) == len(ro["logprobs"])
    assert sum(ro["env_mask"]) == sum(len(t.action_ids) for t in eps[0].turns)
    assert_optimised_equal(*trainer.optimised[-1], eps)


def test_trl_optimises_creditgym_per_token_advantages():
    trainer = make_trainer(per_device=4, steps=1, expert_seed=0)
    trainer.train()
    eps = trainer.last_episodes
    assert len({ep.total_reward for ep in eps}) > 1, "the imperfect expert should give varied returns"
    ids, adv = trainer.optimised[0]
    assert adv.shape == ids.shape and adv.abs().sum() > 0  # (B, T): one advantage per completion token
    assert_optimised_equal(ids, adv, eps)


def test_refuses_what_trl_cannot_run():
    args = GRPOConfig(output_dir="unused", use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match=r"critic.*creditgym's own trainer"):
        check_trl_compatible("gae", args)
    with pytest.raises(ValueError, match=r"probe.*creditgym's own trainer"):
        check_trl_compatible("igpo", args)
    for option in ({"loss_type": "vespo"}, {"importance_sampling_level": "sequence"}, {"off_policy_mask_threshold": 0.5}):
        with pytest.raises(ValueError, match="one advantage per sequence"):
            check_trl_compatible("gigpo", GRPOConfig(output_dir="unused", use_cpu=True, report_to="none", **option))
    check_trl_compatible("tree", args)  # its branches are optional: it runs on the prefix tree TRL's groups give


def test_stop_strings_cut_the_generation_after_the_first_stop():
    decode = lambda ids: "".join(chr(i) for i in ids)
    ids = [ord(c) for c in "ab</search>cd</answer>"]
    assert cut_at_stop(ids, ("</answer>", "</search>"), decode) == (ids[:11], "ab</search>")
    assert cut_at_stop(ids[:5], ("</search>",), decode) == (ids[:5], "ab</s")


def test_two_processes_give_the_advantages_of_one(tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if accelerate is None:
        pytest.skip("accelerate's launcher is not installed")
    script = Path(__file__).with_name("trl_run.py")
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # torchrun through accelerate's launcher; with no visible GPU, torch.distributed uses gloo on CPU
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "PYTHONPATH": str(script.parent), "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
                    str(script), str(tmp_path)], check=True, env=env, timeout=600)
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    episodes = [Episode.from_dict(d) for r in ranks for d in r["episodes"]]
    assert len(episodes) == 4 and len({ep.group_id for ep in episodes}) == 1  # one group across both processes
    assert len({ep.total_reward for ep in episodes}) > 1
    width = max(len(r["ids"][0]) for r in ranks)
    ids, adv = ([torch.nn.functional.pad(torch.tensor(r[k]), (0, width - len(r["ids"][0]))) for r in ranks]
                for k in ("ids", "advantages"))
    assert_optimised_equal(torch.cat(list(ids)), torch.cat(list(adv)), episodes)
