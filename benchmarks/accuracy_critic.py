"""Critics for the accuracy benchmark (docs/accuracy.md, "Critic estimators"; issue 19 item 1).

An estimator whose `needs` ask for a fitted critic (`values: "critic"`) is measured with the critic
its trainer fits, trained on a held-out set of the same policy's episodes and then valuing the base
episodes the truth was measured on:

* `digirl`: DigiRL's step critic (trainers/digirl.py, METHODS.md 6): an MLP head with two outputs on
  mean-pooled hidden states of a frozen copy of the policy's network, a classifier of
  1[return-to-go > 0] with DigiRLConfig's knobs; the value is the smaller of the two probabilities.
* every other critic estimator (`gae`, a user's): PPOTrainer's `Critic` (trainers/ppo.py): a copy
  of the policy's network with a scalar head, fitted by PPO's value regression towards the
  estimator's own returns at its default knobs (for `gae`, lambda-returns; at its default lambda 1 the Monte-Carlo returns): `steps` optimizer steps,
  each on a minibatch of `batch_episodes` episodes drawn in shuffled passes over the fit set. A value
  head starts at 0, so it takes hundreds of steps to fit (on the chain env a random-init network
  sits at correlation 0.73 with the closed-form values until 800 steps of 4 episodes reach 0.998).

Held out, not in-sample: a critic fitted on the very episodes it then values memorises their returns,
and GAE's advantages collapse towards 0 (an estimate no trainer sees: PPO values a batch before it
fits on it). The fit set is extra collection of the same policy on other tasks, reported per row as
`critic_episodes`; in training a critic is fitted on earlier batches, so `episodes_per_sample` does not
count it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch

from creditgym.batch import CreditBatch
from creditgym.credit import compute
from creditgym.trainers.digirl import DigiRLConfig, pack_step_values, step_targets
from creditgym.trainers.ppo import Critic, PPOConfig
from creditgym.trainers.value_heads import MLPHead, fit_binary, pooled_features, state_sequences
from creditgym.trajectory import Episode

__all__ = ["CriticSettings", "critic_backbone", "critic_kind", "fit_critic"]

STEP_CRITIC = "digirl"  # estimators valued by DigiRL's step critic; every other by PPO's Critic


@dataclass(frozen=True)
class CriticSettings:
    """How the benchmark fits a critic. `episodes`: size of the held-out fit set (None: as many as
    the base episodes). `steps`: optimizer steps of the fit (DigiRL's heads: as many minibatches of
    DigiRLConfig.critic_batch states). `batch_episodes`: episodes per PPO-critic minibatch. `lr`:
    the PPO critic's learning rate (DigiRL's heads use DigiRLConfig.critic_lr). `seed`: minibatch
    order and head initialisation."""

    episodes: int | None = None
    steps: int = 400
    batch_episodes: int = 8
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.episodes is not None and self.episodes < 1:
            raise ValueError(f"critic episodes must be >= 1 (or None: as many as the base episodes), got {self.episodes}")
        if self.steps < 1 or self.batch_episodes < 1:
            raise ValueError(f"critic steps and batch_episodes must be >= 1, got {self.steps} and {self.batch_episodes}")
        if not self.lr > 0:
            raise ValueError(f"critic lr must be > 0, got {self.lr}")


def critic_kind(name: str) -> str:
    """"step" (DigiRL's step critic) for `digirl`, else "ppo" (PPOTrainer's Critic)."""
    return "step" if name == STEP_CRITIC else "ppo"


def critic_backbone(policy: Any) -> torch.nn.Module | None:
    """The policy's network the critic copies (`base_model()`, else `model`), or None when the
    policy has none a critic can read (a scripted expert, an HTTP endpoint)."""
    get = getattr(policy, "base_model", None)
    net = get() if callable(get) else getattr(policy, "model", None)
    if not isinstance(net, torch.nn.Module) or not hasattr(getattr(net, "config", None), "hidden_size"):
        return None
    return net


class _Owner:
    """What `Critic` reads of a policy: its network (`base_model()`)."""

    def __init__(self, net: torch.nn.Module):
        self.net = net

    def base_model(self) -> torch.nn.Module:
        return self.net


def fit_critic(
    name: str, backbone: torch.nn.Module, fit: Sequence[Episode], settings: CriticSettings,
    outcome_key: str | None = None, progress: bool = False,
) -> Any:
    """Fit `name`'s critic on the episodes `fit`; returns `attach(batch, episodes)`: the CreditBatch
    of `episodes` with the critic's values on it (`values_BK` with the bootstrap column of truncated
    episodes, and `token_values_BT` for PPO's critic). `backbone` is copied, never changed.
    `progress`: a rich progress bar over the PPO critic's optimizer steps."""
    if not fit:
        raise ValueError(f"estimator {name!r}: the critic's fit set is empty; collect more critic episodes")
    if critic_kind(name) == "step":
        return _fit_step_critic(backbone, fit, settings)
    return _fit_ppo_critic(name, backbone, fit, settings, outcome_key, progress)


def _fit_ppo_critic(
    name: str, backbone: torch.nn.Module, fit: Sequence[Episode], settings: CriticSettings, outcome_key: str | None,
    progress: bool = False,
) -> Any:
    cfg = PPOConfig(estimator=name, estimator_cfg={}, critic="separate", critic_lr=settings.lr, ppo_epochs=1)
    critic = Critic(cast(Any, _Owner(backbone)), cfg)  # a Critic reads only its policy's base_model()
    gen = torch.Generator().manual_seed(settings.seed)
    n, bs = len(fit), min(settings.batch_episodes, len(fit))
    order: list[int] = []
    steps: Iterable[int] = range(settings.steps)
    if progress:
        from rich.progress import track

        steps = track(steps, description=f"fitting {name}'s critic")
    for _ in steps:
        if len(order) < bs:  # a new shuffled pass (minibatches never straddle two passes)
            order = torch.randperm(n, generator=gen).tolist()
        mb, order = [fit[i] for i in order[:bs]], order[bs:]
        batch = critic.attach_values(CreditBatch.from_episodes(mb, outcome_key=outcome_key))
        critic.fit(batch, compute(name, batch))
    return lambda batch, episodes: critic.attach_values(batch)


def _fit_step_critic(backbone: torch.nn.Module, fit: Sequence[Episode], settings: CriticSettings) -> Any:
    cfg = DigiRLConfig()
    frozen = copy.deepcopy(backbone).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)

    def features(ep: Episode) -> torch.Tensor:  # [n + 1, H]: each turn's state and the state after the last
        return pooled_features(frozen, state_sequences(ep), cfg.token_budget, cfg.feature_layer)

    X_ND = torch.cat([features(e)[:-1] for e in fit])
    y_N = step_targets(fit)
    head = MLPHead(int(X_ND.shape[1]), cfg.critic_hidden, 2, seed=settings.seed + 1)  # two heads, min of both
    head.set_scale(X_ND)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.critic_lr)
    epochs = max(1, math.ceil(settings.steps / math.ceil(len(y_N) / cfg.critic_batch)))
    fit_binary(head, opt, X_ND, y_N, epochs, cfg.critic_batch, torch.Generator().manual_seed(settings.seed))

    def attach(batch: CreditBatch, episodes: Sequence[Episode]) -> CreditBatch:
        with torch.no_grad():  # DigiRLTrainer.step_values: the smaller of the two heads' probabilities
            values = [torch.sigmoid(head(features(e))).min(-1).values for e in episodes]
        return batch.with_values(values_BK=pack_step_values(values, episodes, batch.K))

    return attach
