"""SFTTrainer: masked next-token loss on expert episodes, and rejection-sampling fine-tuning.

SFT (design/METHODS.md section 9): `L = -sum M*logp / sum M` over action tokens only (observation,
template and `mask_spans` tokens have M = 0). Episodes come from a list or a `RolloutStore` of
`ScriptedPolicy` runs. RFT / best-of-N (Yuan et al., "Scaling Relationship on Learning Mathematical
Reasoning with Large Language Models", arXiv 2308.01825): per task sample N episodes with the policy,
keep successes, drop duplicate action sequences, keep at most k per task, SFT on them; repeat.

    trainer = SFTTrainer(policy, SFTConfig(lr=1e-3, epochs=2), episodes=expert_episodes)
    trainer.train()
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from creditgym.agents.base import Sampling, TrainablePolicy
from creditgym.agents.rollout import Collector
from creditgym.batch import CreditBatch
from creditgym.store import RolloutStore
from creditgym.trainers import losses
from creditgym.trainers.logprobs import first_loss_position, forward_logprobs, micro_batches, row_lengths
from creditgym.trainers.loop import TrainerLoop, check_finite_config
from creditgym.trainers.schedule import Learner, build_optimizer, optimizer_step
from creditgym.trajectory import Episode, episode_success

__all__ = ["SFTConfig", "SFTTrainer", "rft_select"]

log = logging.getLogger(__name__)


@dataclass
class SFTConfig:
    """Supervised warm start. Defaults are ours (METHODS.md section 9)."""

    lr: float = 1e-3
    """Learning rate: 1e-3 for the tiny from-scratch model, 1e-5 for pretrained models."""
    epochs: int = 1
    """Passes over the episodes."""
    batch_episodes: int = 16
    """Episodes per optimizer step."""
    token_budget: int = 8192
    """Padded tokens per micro-batch; gradients accumulate to exactly the full batch's."""
    loss_agg: str = "token-mean"
    """METHODS.md 1.3 aggregation of the token losses."""
    loss_norm_const: float | None = None
    """Constant normaliser for `seq-mean-token-sum-norm`."""
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    """After warm-up: "constant", or "linear"/"cosine" decay to min_lr_ratio * lr over the planned steps."""
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    min_return: float | None = None
    """Drop episodes whose total reward is below this (None keeps all)."""
    seed: int = 0
    """Seeds the per-epoch shuffle."""
    lora: bool = False
    """Wrap the model in a peft LoRA adapter before training."""
    lora_r: int = 8
    lora_alpha: int = 16
    rft_n: int = 0
    """RFT: episodes sampled per task (8 when on; 0 = plain SFT on the given episodes)."""
    rft_k: int = 4
    """RFT: at most this many kept episodes per task."""
    rft_rounds: int = 1
    """RFT: rounds of sample-filter-train (expert iteration)."""
    rft_threshold: float | None = None
    """RFT: keep episodes with return >= this (None: keep successes, `outcome["success"]` or return > 0)."""
    rft_groups: int = 8
    """RFT: tasks sampled per round."""
    rft_temperature: float = 1.0
    max_new_tokens: int = 64
    """RFT sampling: tokens per action."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    out_dir: str | None = None
    """Where metrics, tensorboard logs and checkpoints go (None: nowhere)."""
    checkpoint_every: int = 0
    """Write out_dir/checkpoint.pt every N optimizer steps (0: never)."""
    resume: bool = False
    """Continue from out_dir/checkpoint.pt when it exists."""
    progress: bool = False
    """Show a rich progress bar."""
    tensorboard: bool = True

    def __post_init__(self) -> None:
        check_finite_config(self)


def rft_select(episodes: Sequence[Episode], k: int, threshold: float | None = None) -> list[Episode]:
    """Rejection sampling: per task keep successes (or return >= threshold), drop duplicate
    action-text sequences, keep at most `k` per task, in input order."""
    kept: list[Episode] = []
    seen: dict[str, set[tuple[str, ...]]] = {}
    for ep in episodes:
        ok = ep.total_reward >= threshold if threshold is not None else episode_success(ep) > 0
        if not ok:
            continue
        key = tuple(t.action_text for t in ep.turns)
        task_seen = seen.setdefault(ep.task_id, set())
        if key in task_seen or len(task_seen) >= k:
            continue
        task_seen.add(key)
        kept.append(ep)
    return kept


class SFTTrainer(TrainerLoop):
    """Masked next-token training on `episodes` (or `store.read()`); with `rft_n > 0` it samples its
    own episodes from `env_id` each round and keeps the successful ones."""

    description = "sft"

    def __init__(
        self,
        policy: TrainablePolicy,
        config: SFTConfig | None = None,
        episodes: Sequence[Episode] | None = None,
        store: RolloutStore | None = None,
        env_id: str | None = None,
    ):
        self.policy = policy
        cfg = config or SFTConfig()
        self.env_id = env_id
        if cfg.lora and not policy.has_adapter:
            policy.add_lora(r=cfg.lora_r, alpha=cfg.lora_alpha)
        eps = list(episodes) if episodes is not None else (store.read() if store is not None else [])
        if cfg.rft_n > 0 and env_id is None:
            raise ValueError("RFT (rft_n > 0) samples its own episodes: pass env_id=")
        if not eps and cfg.rft_n <= 0:
            raise ValueError("SFTTrainer needs episodes: pass episodes=[...] or store=RolloutStore(path)")
        if cfg.min_return is not None:
            eps = [e for e in eps if e.total_reward >= cfg.min_return]
        self.episodes = eps
        self._round = 0
        planned = self._planned_steps(cfg)
        opt, sched = build_optimizer(policy.model, cfg.lr, cfg.weight_decay, cfg.warmup_steps,
                                     schedule=cfg.lr_schedule, total_steps=planned, min_lr_ratio=cfg.min_lr_ratio)  # fmt: skip
        self._setup_loop({"agent": Learner(policy, opt, sched)}, cfg, planned)
        self.maybe_resume()

    def _planned_steps(self, cfg: SFTConfig) -> int:
        if cfg.rft_n > 0:
            per_round = math.ceil(cfg.rft_groups * cfg.rft_k / cfg.batch_episodes) * cfg.epochs
            return per_round * cfg.rft_rounds
        return math.ceil(len(self.episodes) / cfg.batch_episodes) * cfg.epochs

    def state_dict(self) -> dict[str, Any]:
        """RFT's own episodes and round (plain SFT's data position is the step counter alone)."""
        return {"episodes": [e.to_dict() for e in self.episodes], "round": self._round} if self.config.rft_n > 0 else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "episodes" in state:
            self.episodes = [Episode.from_dict(d) for d in state["episodes"]]
            self._round = int(state["round"])

    # ------------------------------------------------------------------ data position
    def _batch_for_step(self, step: int) -> list[Episode]:
        """The episodes of optimizer step `step`: a seeded per-epoch permutation, so resume is exact."""
        cfg = self.config
        n = len(self.episodes)
        per_epoch = math.ceil(n / cfg.batch_episodes)
        epoch, pos = divmod(step, per_epoch)
        order = np.random.default_rng([cfg.seed, epoch, self._round]).permutation(n)
        idx = order[pos * cfg.batch_episodes : (pos + 1) * cfg.batch_episodes]
        return [self.episodes[i] for i in idx]

    def _rft_collect(self) -> None:
        cfg = self.config
        sampling = Sampling(temperature=cfg.rft_temperature, max_new_tokens=cfg.max_new_tokens)
        col = Collector(self.policy, self.env_id, group_size=cfg.rft_n, env_kwargs=dict(cfg.env_kwargs), sampling=sampling)
        sampled = col.collect(num_groups=cfg.rft_groups, seed=cfg.seed * 7919 + self._round * 104729)
        self.episodes = rft_select(sampled, cfg.rft_k, cfg.rft_threshold)
        log.info("RFT round %d: kept %d of %d sampled episodes", self._round, len(self.episodes), len(sampled))

    # ------------------------------------------------------------------ one step
    def _step(self) -> dict[str, float]:
        cfg = self.config
        if cfg.rft_n > 0:
            steps_per_round = self.total_steps // cfg.rft_rounds
            local = self.step_idx % steps_per_round
            if local == 0:
                self._round = self.step_idx // steps_per_round
                self._rft_collect()
            if not self.episodes:
                return self._skip("RFT kept no episode this round")
            step_in_data = local
        else:
            step_in_data = self.step_idx
        batch = CreditBatch.from_episodes(self._batch_for_step(step_in_data))
        return self.update_on_batch(batch)

    def update_on_batch(self, batch: CreditBatch) -> dict[str, float]:
        """One optimizer step of masked NLL on `batch`, micro-batched by `token_budget`."""
        cfg = self.config
        mask_BT = batch.loss_mask_BT
        if losses.aggregation_denom(mask_BT, cfg.loss_agg) <= 0:
            return self._skip("batch has no trainable token")
        total = self.accumulate_gradients(batch)
        if total is None:
            return self._skip("non-finite SFT loss")
        norm = optimizer_step(self.optimizer, self.scheduler, cfg.max_grad_norm)
        if norm != norm:  # NaN: nothing stepped
            self._skip("non-finite gradient norm")
        return {"loss": total, "grad_norm": norm, "tokens": float(mask_BT.sum()), "lr": self.scheduler.get_last_lr()[0]}

    def accumulate_gradients(self, batch: CreditBatch) -> float | None:
        """Backpropagate the batch's loss micro-batch by micro-batch (their losses sum to the full
        batch's); returns the loss, or None (gradients cleared) on a NaN/inf."""
        cfg = self.config
        ids_RT, attn_RT = batch.row_inputs()  # one row per episode, or per turn for a per-turn history
        mask_RT = batch.to_rows(batch.loss_mask_BT, False)
        denom = losses.aggregation_denom(mask_RT, cfg.loss_agg)
        self.model.train()
        lengths = row_lengths(attn_RT)
        total = 0.0
        for rows in micro_batches(lengths, cfg.token_budget):
            T = max(lengths[i] for i in rows)
            ids, attn, m = ids_RT[rows, :T], attn_RT[rows, :T], mask_RT[rows, :T]
            logp_BT, _ = forward_logprobs(self.policy, ids, attn, start=first_loss_position(m), mask_BT=m)
            loss = losses.sft_loss(logp_BT, m.to(logp_BT.device), cfg.loss_agg, cfg.loss_norm_const, denom)
            if losses.has_nonfinite(loss):
                self.optimizer.zero_grad(set_to_none=True)
                return None
            loss.backward()
            total += float(loss.detach())
        return total
