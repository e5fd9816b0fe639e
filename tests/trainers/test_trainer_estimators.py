"""Every registered estimator trains with its defaults in the trainer it asks for (issue 16 item 2),
and what the trainer supplies for `needs`: Monte-Carlo values, the branch `train` flag."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _trainer_helpers import register_letter_env

from creditgym.credit import ESTIMATORS


@pytest.fixture(scope="module", autouse=True)
def letter_env() -> None:
    register_letter_env()


def _trainer_for(name: str) -> tuple[Any, Any]:
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer
    from creditgym.trainers.ppo import PPOConfig, PPOTrainer

    if ESTIMATORS[name].needs.get("values") == "critic":
        return PPOTrainer, PPOConfig
    return GRPOTrainer, GRPOConfig


# a snapshot at collection time: an estimator registered later by a test module is not a built-in
BUILTINS = sorted(n for n, fn in ESTIMATORS.items() if fn.__module__.startswith("creditgym."))


@pytest.mark.parametrize("name", BUILTINS)
def test_every_estimator_trains_two_steps_with_its_defaults(name: str, tiny_policy) -> None:
    trainer_cls, cfg_cls = _trainer_for(name)
    cfg = cfg_cls(estimator=name, steps=2, num_groups=2, group_size=2, max_new_tokens=8, lr=1e-3, tensorboard=False)
    if trainer_cls.__name__ == "PPOTrainer":
        cfg.estimator_cfg = {}  # the estimator's own defaults, not PPOConfig's
    tr = trainer_cls(tiny_policy, "TrainerTestLetter-v0", cfg)
    tr.train()
    assert tr.step_idx == 2 and tr.skipped_steps == 0
    for m in tr.history:
        # the trained episodes: values-only branch rollouts (vineppo, chain spo) are not among them
        assert m["episodes"] > 4.0 if tr.train_on_branches else m["episodes"] == 4.0
        assert "tokens" in m and any(k.startswith("adv/") for k in m)  # credit ran, the update ran
        bad = {k: v for k, v in m.items() if not math.isfinite(v)}
        assert not bad, bad


def test_builtins_cover_the_registry_at_import() -> None:
    """The parametrized test above runs every estimator the package registers."""
    assert {"grpo", "gae", "spo", "vineppo", "tree", "siop"} <= set(BUILTINS)


def _counting_trainer(estimator: str, tiny_policy: Any, **kw: Any) -> Any:
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig(estimator=estimator, steps=1, num_groups=2, group_size=2, max_new_tokens=6, lr=1e-3,
                     tensorboard=False, **kw)  # fmt: skip
    return GRPOTrainer(tiny_policy, "TrainerTestLetter-v0", cfg)


def test_vineppo_gets_monte_carlo_values_and_trains_only_the_sampled_episodes(tiny_policy) -> None:
    tr = _counting_trainer("vineppo", tiny_policy, collect_overrides={"branches": {"at": "every_turn", "n": 2, "train": False}})
    seen: dict[str, Any] = {}
    credit = tr._credit

    def spy(role, episodes, rollouts=()):
        batch, adv, mask, ref = credit(role, episodes, rollouts)
        seen.update(batch=batch, n_eps=len(episodes), n_roll=len(rollouts))
        return batch, adv, mask, ref

    tr._credit = spy
    m = tr.step()
    assert seen["n_eps"] == 4 and seen["n_roll"] == 4 * 2 * 2  # 2 branches before each of 2 turns
    values_BK = seen["batch"].values_BK
    assert values_BK is not None and bool(torch.isfinite(values_BK).all())
    assert m["mc_rollouts"] == 16.0 and m["episodes"] == 4.0


def test_tree_variant_of_spo_trains_on_its_branches(tiny_policy) -> None:
    tr = _counting_trainer("spo", tiny_policy, estimator_cfg={"variant": "tree"},
                           collect_overrides={"branches": {"at": "every_turn", "n": 1, "train": {"variant": "tree"}}})  # fmt: skip
    assert tr.train_on_branches
    m = tr.step()
    assert m["episodes"] == 4.0 + 4 * 2 and "mc_rollouts" not in m


def test_mc_values_without_branches_says_what_to_do(tiny_policy) -> None:
    from creditgym.credit import register_estimator
    from creditgym.credit.segment import vineppo

    register_estimator("trainer_test_mc_nobranch", needs={"values": "mc"})(lambda batch: vineppo(batch))
    with pytest.raises(ValueError, match=r"collect_overrides=.*branches"):
        _counting_trainer("trainer_test_mc_nobranch", tiny_policy)
