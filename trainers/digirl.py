"""DigiRLTrainer: offline-to-online RL for device control (METHODS.md 6; DigiRL, arXiv 2406.11896).

Two critics on frozen features of the policy (trainers/value_heads.py), an automatic curriculum and
an advantage-weighted regression actor, run first on an offline dataset, then online with a replay
buffer:

    V_inst(c)   classifier of success from the first state (goal + screen)
    V_step(s)   classifier of 1[return-to-go > 0]; two heads, their min is the step value
    curriculum  A_inst = r(tau) - V_inst(c); keep trajectories with A_inst >= the buffer's quantile
    advantage   credit.compute("digirl", ...): A_h = lam^(H-h) r_H + (1 - lam^(H-h)) (V(s_{h+1}) + r_h - V(s_h))
    actor       L = -(1/N) sum_i w_i sum_t M_it logp_it,  w_i = 1[A_i > 0] (or exp(A_i / awr_beta))

One step is one iteration: (online only: collect `episodes_per_iteration` episodes into the buffer)
-> fit the critics on the whole buffer -> filter -> step advantages -> `actor_steps` actor updates on
the filtered part. The first `offline_iterations` steps read the offline data only.

    data = collect_offline(DEVICE, "offline.jsonl", tokenizer=policy.tokenizer)
    DigiRLTrainer(policy, DEVICE, DigiRLConfig(offline_iterations=4, online_iterations=4), episodes=data).train()
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from creditgym.agents.base import Sampling, TrainablePolicy
from creditgym.agents.offline import return_to_go
from creditgym.agents.rollout import Collector, derive_seed
from creditgym.batch import CreditBatch
from creditgym.credit import compute
from creditgym.store import RolloutStore
from creditgym.trainers import losses
from creditgym.trainers.logprobs import first_loss_position, forward_logprobs, micro_batches, row_lengths
from creditgym.trainers.loop import TrainerLoop, check_finite_config
from creditgym.trainers.schedule import Learner, build_optimizer, optimizer_step
from creditgym.trainers.value_heads import MLPHead, fit_binary, pooled_features, state_sequences
from creditgym.trajectory import Episode, episode_success

__all__ = [
    "DigiRLConfig", "DigiRLTrainer", "curriculum_keep", "filtered_bc", "pack_step_values", "step_targets",
    "step_weights", "weighted_nll",
]  # fmt: skip

log = logging.getLogger(__name__)


@dataclass
class DigiRLConfig:
    """DigiRL knobs. Release defaults (DigiRL-agent/digirl) in the docstrings; ours are smaller for CPU."""

    lam: float = 0.5
    """Blend of the outcome and the TD estimate in the step advantage (the release's MC gamma 0.5)."""
    adv_variant: str = "paper"
    """"paper" (the lam blend) or "release" (clamp(V' - V - 0.05 + r + MC, 0, 1)); the `digirl` estimator's variant."""
    weighting: str = "filter"
    """Actor weight per step: "filter" (1[A > 0], the paper's filtered regression) or "awr" (exp(A / awr_beta))."""
    awr_beta: float = 0.1
    """AWR temperature (weights capped at awr_max_weight)."""
    awr_max_weight: float = 20.0
    """Cap on the AWR weight (keeps one lucky step from dominating)."""
    curriculum_quantile: float | None = 0.9
    """Keep trajectories whose A_inst reaches this quantile of the buffer's (paper 0.9; None keeps all)."""
    offline_iterations: int = 4
    """Iterations on the offline data only (release: 30 actor / 20 critic iterations)."""
    online_iterations: int = 4
    """Iterations that first collect new episodes into the replay buffer (release: 400)."""
    episodes_per_iteration: int = 16
    """Episodes collected per online iteration (release: 16)."""
    replay_capacity_steps: int = 2000
    """Replay buffer size in steps (release 2000); the oldest episodes go first."""
    actor_steps: int = 4
    """Actor optimizer steps per iteration (release: 20 epochs of 4 x 32 steps)."""
    actor_batch_episodes: int = 8
    """Filtered episodes per actor step (drawn with the trainer's seeded generator)."""
    critic_epochs: int = 5
    """Epochs of the critics over the buffer per iteration (release: 5 step / 5 instruction)."""
    critic_batch: int = 64
    """States per critic minibatch."""
    critic_hidden: int = 128
    """Hidden width of the MLP critic heads."""
    critic_lr: float = 1e-3
    """Critic-head learning rate (release 1e-4 for its RoBERTa critics; heads on frozen features take more)."""
    lr: float = 1e-4
    """Actor learning rate (release lm_lr 1e-4)."""
    weight_decay: float = 0.0
    """AdamW weight decay of the actor."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up of the actor, in optimizer steps."""
    max_grad_norm: float = 1.0
    """Gradient clipping of the actor (release 0.01)."""
    feature_layer: int = -1
    """Hidden layer of the frozen policy copy the critics read (mean-pooled over the state's tokens)."""
    temperature: float = 1.0
    """Sampling temperature of online collection (release 1.0)."""
    max_new_tokens: int = 64
    """Tokens per action (release 128)."""
    history: str | None = None
    """The Collector's history policy (None: the env's; Device: window)."""
    max_context_tokens: int | None = None
    """Token budget of one context (None: the policy's)."""
    token_budget: int = 8192
    """Padded tokens per micro-batch (actor and feature passes)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Env constructor kwargs of online collection (match the offline data's)."""
    seed: int = 0
    """Seeds collection, critic minibatches and actor draws."""
    out_dir: str | None = None
    """Where metrics, tensorboard logs and checkpoints go (None: nowhere)."""
    checkpoint_every: int = 0
    """Write out_dir/checkpoint.pt every N iterations (0: never)."""
    resume: bool = False
    """Continue from out_dir/checkpoint.pt when it exists."""
    progress: bool = False
    """Show a rich progress bar."""
    tensorboard: bool = True
    """Write tensorboard logs to out_dir."""

    def __post_init__(self) -> None:
        check_finite_config(self)
        if self.weighting not in ("filter", "awr"):
            raise ValueError(f"weighting must be 'filter' or 'awr', got {self.weighting!r}")
        if self.curriculum_quantile is not None and not 0.0 <= self.curriculum_quantile <= 1.0:
            raise ValueError(f"curriculum_quantile must lie in [0, 1] or be None, got {self.curriculum_quantile}")


# ---------------------------------------------------------------- pure pieces
def curriculum_keep(r_N: torch.Tensor, v_inst_N: torch.Tensor, quantile: float | None) -> torch.Tensor:
    """DigiRL's instruction-level filter: `A_inst = r - V_inst`, keep `A_inst >= quantile(A_inst)`
    (linear interpolation, as numpy); None keeps everything."""
    if quantile is None or r_N.numel() == 0:
        return torch.ones_like(r_N, dtype=torch.bool)
    a_N = r_N.double() - v_inst_N.double()
    return a_N >= torch.quantile(a_N, float(quantile))


def step_targets(episodes: Sequence[Episode]) -> torch.Tensor:
    """The step critic's labels, one per turn of each episode in order: 1[return-to-go > 0]."""
    return torch.tensor([float(g > 0) for e in episodes for g in return_to_go([t.reward for t in e.turns])])


def pack_step_values(values: Sequence[torch.Tensor], episodes: Sequence[Episode], K: int) -> torch.Tensor:
    """`values_BK` from each episode's step values (`[n + 1]`, the last after its final step): its
    turns' values, and the bootstrap slot only after truncation (a terminated episode's next value is 0)."""
    V_BK = torch.zeros(len(episodes), K)
    for b, (v, e) in enumerate(zip(values, episodes, strict=True)):
        n = min(e.num_turns + int(e.truncated), K)
        V_BK[b, :n] = v[:n]
    return V_BK


def step_weights(adv_BK: torch.Tensor, mask_BK: torch.Tensor, weighting: str, beta: float = 0.1, cap: float = 20.0) -> torch.Tensor:
    """Actor weight per step: `1[A > 0]` ("filter") or `min(exp(A / beta), cap)` ("awr"); 0 at padding."""
    w = (adv_BK > 0).to(adv_BK.dtype) if weighting == "filter" else torch.exp(adv_BK / beta).clamp(max=cap)
    return torch.where(mask_BK, w, torch.zeros_like(w))


def filtered_bc(episodes: Sequence[Episode], quantile: float = 0.9) -> list[Episode]:
    """The "filtered BC" baseline's data (METHODS.md 6): trajectories whose return reaches the
    quantile of the returns (binary rewards: the successes; all episodes if every return is equal
    to the top one)."""
    if not episodes:
        return []
    R = np.array([e.total_reward for e in episodes])
    thr = float(np.quantile(R, quantile))
    kept = [e for e, r in zip(episodes, R, strict=True) if r >= thr]
    return [e for e in kept if e.total_reward > 0] or kept


def weighted_nll(policy: TrainablePolicy, batch: CreditBatch, w_BT: torch.Tensor, n_samples: float,
                 token_budget: int) -> float | None:  # fmt: skip
    """Backpropagate `-(1/n_samples) * sum_bt w_bt * M_bt * logp_bt` micro-batch by micro-batch on the
    batch's row layout; returns the loss, or None on a non-finite loss (nothing backpropagated then)."""
    ids_RT, attn_RT = batch.row_inputs()
    w_RT = batch.to_rows(w_BT * batch.loss_mask_BT.to(w_BT.dtype), 0.0)
    m_RT = w_RT != 0
    lengths = row_lengths(attn_RT)
    total = 0.0
    policy.model.train()
    for rows in micro_batches(lengths, token_budget):
        if not bool(m_RT[rows].any()):
            continue
        T = max(lengths[i] for i in rows)
        m = m_RT[rows, :T]
        logp_BT, _ = forward_logprobs(policy, ids_RT[rows, :T], attn_RT[rows, :T], start=first_loss_position(m), mask_BT=m)
        loss = -(logp_BT * w_RT[rows, :T].to(logp_BT.device)).sum() / max(n_samples, 1.0)
        if losses.has_nonfinite(loss):
            return None
        loss.backward()
        total += float(loss.detach())
    return total


class DigiRLTrainer(TrainerLoop):
    """DigiRL on `env_id`, starting from `episodes` (or `store.read()`), the offline dataset."""

    description = "digirl"

    def __init__(
        self,
        policy: TrainablePolicy,
        env_id: str,
        config: DigiRLConfig | None = None,
        episodes: Sequence[Episode] | None = None,
        store: RolloutStore | None = None,
    ):
        cfg = config or DigiRLConfig()
        self.policy, self.env_id = policy, env_id
        offline = list(episodes) if episodes is not None else (store.read() if store is not None else [])
        if not offline and cfg.offline_iterations > 0:
            raise ValueError("DigiRL's offline phase needs data: pass episodes=collect_offline(...) or store=, "
                             "or set offline_iterations=0")  # fmt: skip
        self.buffer: list[Episode] = []
        self._features: dict[str, torch.Tensor] = {}
        self.capacity_steps = int(cfg.replay_capacity_steps)
        self._add(offline)
        # frozen copy of the policy's network: the critics' features (METHODS.md 6, critic_backbone="policy")
        self.feature_model = copy.deepcopy(policy.base_model()).eval()
        for p in self.feature_model.parameters():
            p.requires_grad_(False)
        self.fingerprint = float(sum(p.double().abs().sum() for p in self.feature_model.parameters()))
        d = int(self.feature_model.config.hidden_size)
        self.v_inst = MLPHead(d, cfg.critic_hidden, 1, seed=cfg.seed)
        self.v_step = MLPHead(d, cfg.critic_hidden, 2, seed=cfg.seed + 1)  # two heads, min of both
        self.inst_opt = torch.optim.Adam(self.v_inst.parameters(), lr=cfg.critic_lr)
        self.step_opt = torch.optim.Adam(self.v_step.parameters(), lr=cfg.critic_lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.collector = Collector(
            policy, env_id, group_size=1, env_kwargs=dict(cfg.env_kwargs), history=cfg.history,
            sampling=Sampling(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens),
            max_context_tokens=cfg.max_context_tokens,
        )  # fmt: skip
        total = cfg.offline_iterations + cfg.online_iterations
        opt, sched = build_optimizer(policy.model, cfg.lr, cfg.weight_decay, cfg.warmup_steps)
        self._setup_loop({"agent": Learner(policy, opt, sched)}, cfg, total)
        self.maybe_resume()

    # ------------------------------------------------------------------ checkpoint
    def close(self) -> None:
        """TrainerLoop.close and the online Collector's env workers."""
        super().close()
        self.collector.close()

    def state_dict(self) -> dict[str, Any]:
        """The replay buffer, the critic heads and their optimizers, the generator and the Collector."""
        return {
            "buffer": [e.to_dict() for e in self.buffer],
            "v_inst": self.v_inst.state_dict(), "v_step": self.v_step.state_dict(),
            "inst_opt": self.inst_opt.state_dict(), "step_opt": self.step_opt.state_dict(),
            "gen": self.gen.get_state(), "collector": self.collector.state_dict(),
            "feature_fingerprint": self.fingerprint,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if abs(float(state["feature_fingerprint"]) - self.fingerprint) > 1e-6 * max(1.0, abs(self.fingerprint)):
            raise ValueError("this checkpoint's critics read features of another starting policy: resume with the "
                             "policy the run started from (its critics' frozen copy), not a later save")  # fmt: skip
        self.buffer = [Episode.from_dict(d) for d in state["buffer"]]
        self.v_inst.load_state_dict(state["v_inst"])
        self.v_step.load_state_dict(state["v_step"])
        self.inst_opt.load_state_dict(state["inst_opt"])
        self.step_opt.load_state_dict(state["step_opt"])
        self.gen.set_state(state["gen"])
        self.collector.load_state_dict(state["collector"])

    # ------------------------------------------------------------------ data
    def _add(self, episodes: Sequence[Episode]) -> None:
        """Append to the replay buffer, dropping the oldest episodes beyond `replay_capacity_steps`."""
        self.buffer += [e for e in episodes if e.num_turns > 0]
        steps = sum(e.num_turns for e in self.buffer)
        while len(self.buffer) > 1 and steps > self.capacity_steps:
            gone = self.buffer.pop(0)
            steps -= gone.num_turns
            self._features.pop(gone.episode_id, None)

    def state_features(self, ep: Episode) -> torch.Tensor:
        """`[n + 1, H]`: the frozen features of each turn's state and of the state after the last turn."""
        if ep.episode_id not in self._features:
            cfg = self.config
            self._features[ep.episode_id] = pooled_features(self.feature_model, state_sequences(ep), cfg.token_budget, cfg.feature_layer)
        return self._features[ep.episode_id]

    def step_values(self, ep: Episode) -> torch.Tensor:
        """V_step at each state of `ep` (`[n + 1]`, probabilities; the min of the two heads)."""
        with torch.no_grad():
            return torch.sigmoid(self.v_step(self.state_features(ep))).min(-1).values

    def instruction_values(self, episodes: Sequence[Episode]) -> torch.Tensor:
        with torch.no_grad():
            X = torch.stack([self.state_features(e)[0] for e in episodes])
            return torch.sigmoid(self.v_inst(X)).squeeze(-1)

    # ------------------------------------------------------------------ one iteration
    def fit_critics(self) -> dict[str, float]:
        """Fit V_inst (first state -> success) and V_step (every state -> 1[return-to-go > 0]) on the buffer."""
        cfg = self.config
        feats = [self.state_features(e) for e in self.buffer]
        X0 = torch.stack([f[0] for f in feats])
        y0 = torch.tensor([float(episode_success(e) > 0) for e in self.buffer])
        Xs = torch.cat([f[:-1] for f in feats])
        ys = step_targets(self.buffer)
        if self.step_idx == 0:
            self.v_inst.set_scale(X0)
            self.v_step.set_scale(Xs)
        l_inst = fit_binary(self.v_inst, self.inst_opt, X0, y0, cfg.critic_epochs, cfg.critic_batch, self.gen)
        l_step = fit_binary(self.v_step, self.step_opt, Xs, ys, cfg.critic_epochs, cfg.critic_batch, self.gen)
        return {"critic/inst_loss": l_inst, "critic/step_loss": l_step}

    def _step(self) -> dict[str, float]:
        cfg = self.config
        metrics: dict[str, float] = {"online": float(self.step_idx >= cfg.offline_iterations)}
        if self.step_idx >= cfg.offline_iterations:
            new = self.collector.collect(cfg.episodes_per_iteration, derive_seed(cfg.seed, self.step_idx))
            self._add(new)
            metrics["collect/success"] = sum(episode_success(e) for e in new) / max(len(new), 1)
        metrics.update(self.fit_critics())
        r_N = torch.tensor([float(episode_success(e)) for e in self.buffer])
        keep = curriculum_keep(r_N, self.instruction_values(self.buffer), cfg.curriculum_quantile)
        kept = [e for e, k in zip(self.buffer, keep.tolist(), strict=True) if k]
        metrics.update({"buffer/episodes": float(len(self.buffer)), "buffer/success": float(r_N.mean()),
                        "curriculum/kept": float(len(kept))})  # fmt: skip
        updates = [self.actor_update(kept) for _ in range(cfg.actor_steps)]
        done = [u for u in updates if u]
        if not done:
            return {**metrics, **self._skip("no step with a positive weight in the filtered buffer")}
        for key in done[0]:
            metrics[f"actor/{key}"] = sum(u[key] for u in done) / len(done)
        return metrics

    def actor_update(self, kept: Sequence[Episode]) -> dict[str, float]:
        """One advantage-weighted regression step on `actor_batch_episodes` episodes drawn from `kept`."""
        cfg = self.config
        idx = torch.randperm(len(kept), generator=self.gen)[: cfg.actor_batch_episodes].tolist()
        eps = [kept[i] for i in idx]
        batch = CreditBatch.from_episodes(eps)
        V_BK = pack_step_values([self.step_values(e) for e in eps], eps, batch.K)
        adv = compute("digirl", batch.with_values(values_BK=V_BK), lam=cfg.lam, variant=cfg.adv_variant)
        w_BK = step_weights(adv.turn_BK, batch.turn_mask_BK, cfg.weighting, cfg.awr_beta, cfg.awr_max_weight)
        if not bool((w_BK > 0).any()):
            return {}
        w_BT = torch.where(batch.token_turn_BT >= 0, w_BK.gather(1, batch.token_turn_BT.clamp(min=0)), torch.zeros(()))
        n_samples = float(batch.turn_mask_BK.sum())
        loss = weighted_nll(self.policy, batch, w_BT, n_samples, cfg.token_budget)
        if loss is None:
            self.optimizer.zero_grad(set_to_none=True)
            return {}
        norm = optimizer_step(self.optimizer, self.scheduler, cfg.max_grad_norm)
        return {"loss": loss, "grad_norm": norm if math.isfinite(norm) else -1.0,
                "adv_mean": float(adv.turn_BK[batch.turn_mask_BK].mean()),
                "imitated_frac": float((w_BK > 0).sum()) / max(n_samples, 1.0)}  # fmt: skip
