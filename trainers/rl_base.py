"""`RLTrainerBase`: collect -> credit -> update -> sync -> log, shared by GRPOTrainer and PPOTrainer.

Collection is configured from the estimator's `needs` (ARCHITECTURE.md "Credit"): probes, greedy
baselines, branches, outcome keys; `collect_overrides` replaces any of them. Self-play trains one
learner per role (`policies={role: policy}`); each role's episodes update only that role's policy.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from creditgym.batch import CreditBatch
from creditgym.store import RolloutStore
from creditgym.trainers import losses
from creditgym.trainers.common import (
    StageTimer,
    apply_lora,
    build_optimizer,
    has_nonfinite,
    row_logprobs_no_grad,
)
from creditgym.trainers.curriculum import TaskSampler, UniformSampler
from creditgym.trainers.loop import Learner, TrainerLoop
from creditgym.trainers.rl_config import RLConfig
from creditgym.trainers.rl_update import UpdateInputs, policy_update
from creditgym.trainers.sft import episode_success
from creditgym.trajectory import Episode

__all__ = ["RLTrainerBase", "derive_seed", "mark_excluded_groups", "nonfinite_reward", "split_for_training"]

log = logging.getLogger(__name__)


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integers (numpy SeedSequence: stable across processes)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


class RLTrainerBase(TrainerLoop):
    """Shared machinery; subclasses set `description` and may override `_values_for` (PPO)."""

    def __init__(
        self,
        policy: Any = None,
        env_id: str | None = None,
        config: RLConfig | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        policies: Mapping[str, Any] | None = None,
        generator: Any = None,
        task_sampler: TaskSampler | None = None,
        collector: Any = None,
    ):
        cfg = config if config is not None else RLConfig()
        if policy is None and not policies:
            raise ValueError(f"{type(self).__name__} needs a policy (or policies={{role: policy}} for self-play)")
        if env_id is None and collector is None:
            raise ValueError(f"{type(self).__name__} needs an env_id (or a ready collector=)")
        self.env_id = env_id
        self.env_kwargs = {**cfg.env_kwargs, **dict(env_kwargs or {})}
        self.policies: dict[str, Any] = dict(policies) if policies else {"agent": policy}
        self.generator = generator
        self.task_sampler: TaskSampler = task_sampler if task_sampler is not None else UniformSampler()
        self.needs = self._resolve_needs(cfg)
        self.train_on_branches = self._trains_on_branches(cfg)
        self._check_config(cfg)
        if cfg.lora:
            for p in self.policies.values():
                apply_lora(p, cfg.lora_r, cfg.lora_alpha)
        learners = {}
        for role, p in self.policies.items():
            opt, sched = build_optimizer(
                p.model, cfg.lr, cfg.weight_decay, cfg.warmup_steps, (float(cfg.adam_betas[0]), float(cfg.adam_betas[1])),
                schedule=cfg.lr_schedule, total_steps=cfg.steps * cfg.ppo_epochs * cfg.mini_batches,
                min_lr_ratio=cfg.min_lr_ratio,
            )
            learners[role] = Learner(p, opt, sched)
        self._refs: dict[str, Any] = {}
        if cfg.kl_coef > 0:
            for role, p in self.policies.items():
                if not getattr(p, "has_adapter", False):  # LoRA: adapters off is the reference, no copy
                    self._refs[role] = _frozen_copy(p)
        self.rng = np.random.default_rng(cfg.seed)
        self.collect_calls = 0
        self.timer = StageTimer()
        self.collector = collector if collector is not None else self._build_collector(cfg)
        self.store = None
        self._setup_loop(learners, cfg, cfg.steps)
        if self.out_dir is not None and cfg.save_episodes:
            self.store = RolloutStore(self.out_dir / "episodes.jsonl", fsync=False)

    # ------------------------------------------------------------------ configuration
    def _estimator(self, name: str) -> Any:
        from creditgym.credit import ESTIMATORS

        if name not in ESTIMATORS:
            raise KeyError(f"unknown estimator {name!r}; registered: {sorted(ESTIMATORS)}")
        return ESTIMATORS[name]

    def _resolve_needs(self, cfg: RLConfig) -> dict[str, Any]:
        needs = dict(getattr(self._estimator(cfg.estimator), "needs", {}) or {})
        needs.update(cfg.collect_overrides)
        return {k: v for k, v in needs.items() if v is not None and v is not False}

    def _trains_on_branches(self, cfg: RLConfig) -> bool:
        """Whether branch rollouts are trained on, or only give Monte-Carlo values (`needs["branches"]["train"]`)."""
        from creditgym.credit.registry import check_branches_spec, trains_on_branches

        spec = self.needs.get("branches")
        if not spec:
            return False
        check_branches_spec(cfg.estimator, spec)
        return trains_on_branches(self._estimator(cfg.estimator), spec, cfg.estimator_cfg)

    def _check_config(self, cfg: RLConfig) -> None:
        if cfg.per_turn_clip and cfg.estimator not in ("a2tgpo",):
            log.info("per_turn_clip=True: estimator %r must supply clip_scale_BK", cfg.estimator)
        if cfg.loss_agg not in losses.AGG_MODES:
            raise ValueError(f"unknown loss_agg {cfg.loss_agg!r}; choose one of {losses.AGG_MODES}")
        if cfg.dynamic_sampling_metric not in ("return", "success"):
            raise ValueError("dynamic_sampling_metric must be 'return' or 'success'")
        if cfg.overlong_scope not in ("turn", "episode"):
            raise ValueError("overlong_scope must be 'turn' or 'episode'")

    def _build_collector(self, cfg: RLConfig) -> Any:
        from creditgym.agents.base import Sampling
        from creditgym.agents.rollout import Collector

        probes = []
        probe = self.needs.get("probe")
        if probe is not None:
            from creditgym.agents import probes as probe_mod

            known = {"gold": probe_mod.GoldAnswerProbe, "siop": probe_mod.SIOPProbe}
            if probe not in known:
                raise ValueError(f"estimator {cfg.estimator!r} needs probe {probe!r}; known probes: {sorted(known)}")
            probes.append(known[probe]())
        gen_policy = self.generator if self.generator is not None else None
        policies = None
        if len(self.policies) > 1 or "agent" not in self.policies:
            policies = dict(self.policies)
        return Collector(
            gen_policy if gen_policy is not None else (None if policies else self.policies["agent"]),
            self.env_id,
            group_size=cfg.group_size,
            env_kwargs=self.env_kwargs,
            policies=policies,
            greedy_baseline=bool(self.needs.get("greedy", False)),
            probes=probes,
            sampling=Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens),
            max_context_tokens=cfg.max_context_tokens,
            history=cfg.history,
        )

    # ------------------------------------------------------------------ resume state
    def _extra_state(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "collect_calls": self.collect_calls,
            "collector_calls": getattr(self.collector, "_calls", None),
            "collector_gen_calls": getattr(self.collector, "_gen_calls", None),
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.rng.bit_generator.state = state["rng"]
        self.collect_calls = int(state["collect_calls"])
        for attr, key in (("_calls", "collector_calls"), ("_gen_calls", "collector_gen_calls")):
            if state.get(key) is not None and hasattr(self.collector, attr):
                setattr(self.collector, attr, state[key])

    # ------------------------------------------------------------------ collect
    def _collect_round(self) -> list[Episode]:
        cfg = self.config
        specs = self.task_sampler.sample(cfg.num_groups, self.rng)
        seed = derive_seed(cfg.seed, self.collect_calls)
        self.collect_calls += 1
        set_env_attr = getattr(self.collector, "set_env_attr", None)
        if callable(set_env_attr):  # env curricula (e.g. SimSearch's noise) read the trainer's round
            set_env_attr("training_step", self.step_idx)
        episodes = mark_excluded_groups(self.collector.collect(cfg.num_groups, seed=seed, tasks=specs))
        branches = self.needs.get("branches")
        if branches:
            rollouts = list(self.collector.branch_for([e for e in episodes if not excluded(e)], branches))
            if not self.train_on_branches:  # Monte-Carlo values only (vineppo, chain spo)
                rollouts = [dataclasses.replace(e, meta={**e.meta, MC_ROLLOUT: True}) for e in rollouts]
            episodes = mark_excluded_groups([*episodes, *rollouts])
        update = getattr(self.task_sampler, "update", None)
        if callable(update):
            update(specs, [zero_advantage_view(e) if excluded(e) else e for e in episodes])
        return episodes

    def _group_returns(self, episodes: Sequence[Episode]) -> torch.Tensor:
        if self.config.dynamic_sampling_metric == "success":
            return torch.tensor([episode_success(e) for e in episodes], dtype=torch.float64)
        return torch.tensor([e.total_reward for e in episodes], dtype=torch.float64)

    def collect(self) -> tuple[list[Episode], dict[str, float]]:
        """One round of episodes; with dynamic sampling, further rounds until `num_groups` groups
        with unequal outcomes are kept (DAPO, arXiv 2503.14476)."""
        cfg = self.config
        if not cfg.dynamic_sampling:
            return self._collect_round(), {}
        kept: list[list[Episode]] = []
        seen = 0
        rounds = 0
        while len(kept) < cfg.num_groups and rounds < cfg.dynamic_sampling_max_batches:
            eps = self._collect_round()
            rounds += 1
            groups: dict[tuple[str, str], list[Episode]] = {}
            for e in eps:
                groups.setdefault((e.group_id, e.role), []).append(e)
            seen += len(groups)
            for members in groups.values():
                trained = [e for e in members if not e.meta.get(MC_ROLLOUT)]
                if any(excluded(e) for e in members) or not trained:
                    continue
                r = self._group_returns(trained)
                if float(r.max() - r.min()) > 1e-8:
                    kept.append(members)
        if len(kept) < cfg.num_groups and not cfg.allow_short_batch:
            raise RuntimeError(
                f"dynamic sampling kept {len(kept)} of {cfg.num_groups} groups after {rounds} rounds: every other "
                "group had equal outcomes. Lower the difficulty, raise group_size, or set allow_short_batch=True"
            )
        kept = kept[: cfg.num_groups]
        return [e for g in kept for e in g], {"ds/kept_frac": len(kept) / max(seen, 1), "ds/gen_rounds": float(rounds)}

    # ------------------------------------------------------------------ credit
    def _pack(self, episodes: Sequence[Episode]) -> CreditBatch:
        outcome_key = self.config.outcome_key or self.needs.get("outcome_key")
        probe_key = self.needs.get("probe")
        return CreditBatch.from_episodes(episodes, outcome_key=outcome_key, probe_key=probe_key)

    def _shape_rewards(self, episodes: Sequence[Episode], batch: CreditBatch) -> tuple[CreditBatch, torch.Tensor]:
        """DAPO overlong shaping and filtering; returns the batch and the trainable-token mask."""
        cfg = self.config
        mask_BT = batch.loss_mask_BT.clone()
        if cfg.overlong_cache_tokens:
            n_BK = torch.zeros_like(batch.rewards_BK)
            for b, ep in enumerate(episodes):
                for k, t in enumerate(ep.turns):
                    n_BK[b, k] = len(t.action_ids)
            if cfg.overlong_scope == "turn":
                pen_BK = losses.overlong_penalty(n_BK, cfg.max_new_tokens, cfg.overlong_cache_tokens, cfg.overlong_penalty)
                pen_BK = pen_BK * batch.turn_mask_BK
            else:
                budget = self._episode_token_budget()
                pen_B = losses.overlong_penalty(n_BK.sum(1), budget, cfg.overlong_cache_tokens, cfg.overlong_penalty)
                last_B = (batch.n_turns_B - 1).clamp_min(0)
                pen_BK = torch.zeros_like(n_BK).scatter_(1, last_B[:, None], pen_B[:, None])
            batch = self._add_turn_rewards(batch, pen_BK.to(batch.rewards_BK.dtype))
        if cfg.overlong_filter:
            for b, ep in enumerate(episodes):
                if any(t.info.get("finish_reason") == "length" for t in ep.turns):
                    mask_BT[b] = False
        return batch, mask_BT

    def _add_turn_rewards(self, batch: CreditBatch, delta_BK: torch.Tensor) -> CreditBatch:
        changes: dict[str, Any] = {"rewards_BK": batch.rewards_BK + delta_BK}
        if batch.meta.get("outcome_key") is None:  # outcome is the sum of turn rewards: keep it so
            changes["outcome_B"] = batch.outcome_B + delta_BK.sum(1).to(batch.outcome_B.dtype)
        return dataclasses.replace(batch, **changes)

    def _episode_token_budget(self) -> int:
        max_turns = int(self.env_kwargs.get("max_turns", 0) or 0) or 6
        return max_turns * self.config.max_new_tokens

    def _ref_logprobs(self, role: str, batch: CreditBatch, mask_BT: torch.Tensor) -> torch.Tensor | None:
        """The reference's logprobs on the trainable tokens `mask_BT` (0 elsewhere; nothing reads them)."""
        if self.config.kl_coef <= 0:
            return None
        policy = self.policies[role]
        if role in self._refs:
            return row_logprobs_no_grad(self._refs[role], batch, self.config.temperature, mask_BT)
        with policy.reference():
            return row_logprobs_no_grad(policy, batch, self.config.temperature, mask_BT)

    def _values_for(self, role: str, batch: CreditBatch) -> CreditBatch:
        """PPO attaches critic values here; critic-free trainers return the batch unchanged."""
        return batch

    def _mc_values(self, batch: CreditBatch, episodes: Sequence[Episode], rollouts: Sequence[Episode]) -> CreditBatch:
        """Attach Monte-Carlo values from the branch rollouts (`needs["values"] == "mc"`; CREDIT.md 7),
        discounted with the estimator's own `gamma`."""
        from creditgym.agents.offline import mc_values
        from creditgym.credit.registry import knob_default

        gamma = float(knob_default(self._estimator(self.config.estimator), "gamma", self.config.estimator_cfg, 1.0))
        values_BK = mc_values(episodes, rollouts, gamma=gamma, num_slots=batch.K)
        return batch.with_values(values_BK=values_BK)

    def _credit(
        self, role: str, episodes: Sequence[Episode], rollouts: Sequence[Episode] = ()
    ) -> tuple[CreditBatch, Any, torch.Tensor, torch.Tensor | None]:
        """Pack `episodes` (the trained ones), shape rewards, attach values and run the estimator;
        `rollouts` are branch rollouts used only for Monte-Carlo values."""
        from creditgym.credit import compute

        cfg = self.config
        batch = self._pack(episodes)
        batch, mask_BT = self._shape_rewards(episodes, batch)
        ref_BT = self._ref_logprobs(role, batch, mask_BT)
        if ref_BT is not None and cfg.kl_in_reward:
            assert batch.logprobs_BT is not None
            k1_BT = losses.kl_terms(self._old_logprobs(role, batch, mask_BT), ref_BT, "k1")
            shaped = losses.kl_reward_penalty(batch.rewards_BK, k1_BT, batch.token_turn_BT, mask_BT, cfg.kl_coef)
            batch = self._add_turn_rewards(batch, (shaped - batch.rewards_BK) * batch.turn_mask_BK)
        if self.needs.get("values") == "mc":
            batch = self._mc_values(batch, episodes, rollouts)
        batch = self._values_for(role, batch)
        adv = compute(cfg.estimator, batch, **cfg.estimator_cfg)
        return batch, adv, mask_BT, ref_BT

    def _old_logprobs(self, role: str, batch: CreditBatch, mask_BT: torch.Tensor) -> torch.Tensor:
        return row_logprobs_no_grad(self.policies[role], batch, self.config.temperature, mask_BT)

    # ------------------------------------------------------------------ one round
    def _step(self) -> dict[str, float]:
        cfg = self.config
        with self.timer("rollout"):
            episodes, metrics = self.collect()
        if self.store is not None:
            self.store.extend(episodes)
        trained, rollouts, dropped = split_for_training(episodes)
        metrics.update(_episode_metrics(trained))
        metrics.update(dropped)
        if rollouts:
            metrics["mc_rollouts"] = float(len(rollouts))
        if not trained:
            metrics.update(self._skip("every group was dropped (non-finite rewards or generation errors)"))
        for role, learner in self.learners.items():
            eps = [e for e in trained if e.role == role] if len(self.learners) > 1 else trained
            if not eps:
                continue
            roll = [e for e in rollouts if e.role == role] if len(self.learners) > 1 else rollouts
            prefix = f"{role}/" if len(self.learners) > 1 else ""
            with self.timer("credit"):
                batch, adv, mask_BT, ref_BT = self._credit(role, eps, roll)
            metrics.update({prefix + (k if k.startswith("adv/") else f"adv/{k}"): float(v) for k, v in adv.metrics.items()})
            if has_nonfinite(adv.token_BT):
                metrics.update(self._skip(f"{role}: NaN or inf in the advantages"))
                continue
            if cfg.per_turn_clip and adv.clip_scale_BK is None:
                raise ValueError(
                    f"estimator {cfg.estimator!r} gives no clip_scale_BK; use a2tgpo or set per_turn_clip=False"
                )
            with self.timer("update"):
                out = policy_update(self, learner, UpdateInputs(batch, adv, mask_BT, ref_BT))
            metrics.update({f"{prefix}{k}": v for k, v in out.items()})
            with self.timer("critic"):
                metrics.update({f"{prefix}{k}": v for k, v in self._after_update(role, batch, adv).items()})
        with self.timer("sync"):
            self._sync_generator()
        metrics.update(self.timer.pop())
        return metrics

    def _after_update(self, role: str, batch: CreditBatch, adv: Any) -> dict[str, float]:
        """PPO trains its critic here; critic-free trainers do nothing."""
        return {}

    def _sync_generator(self) -> None:
        gen = self.generator
        if gen is None:
            return
        src = self.policies["agent"] if "agent" in self.policies else next(iter(self.policies.values()))
        sync = getattr(gen, "sync_weights", None) or getattr(gen, "load_weights_from", None)
        if callable(sync):
            sync(src.model)
        elif hasattr(gen, "model"):
            gen.model.load_state_dict(src.model.state_dict())
        else:
            raise TypeError(f"cannot sync weights into generator {type(gen).__name__}: it has no sync_weights() or .model")


MC_ROLLOUT = "mc_rollout"
"""`Episode.meta` key of branch rollouts kept only for Monte-Carlo values (not trained on)."""
EXCLUDED = "train_excluded"
"""`Episode.meta` key: why an episode's group is left out of training ("nonfinite_reward",
"generation_error"; the Collector sets it, and `mark_excluded_groups` checks rewards itself)."""


def nonfinite_reward(ep: Episode) -> bool:
    """True when a turn reward, a numeric outcome entry or the greedy-baseline return is NaN or inf."""
    if any(not math.isfinite(float(t.reward)) for t in ep.turns):
        return True
    values = [*ep.outcome.values(), ep.meta.get("greedy_return", 0.0)]
    return any(isinstance(v, (int, float)) and not math.isfinite(float(v)) for v in values)


def excluded(ep: Episode) -> bool:
    return bool(ep.meta.get(EXCLUDED))


def mark_excluded_groups(episodes: Sequence[Episode]) -> list[Episode]:
    """Set `meta["train_excluded"]` on every episode of a group (same `group_id`) that holds an
    excluded episode or one with a non-finite reward (METHODS.md 1.9): the whole group is dropped,
    since its baseline is poisoned. The reason is the Collector's, else "nonfinite_reward"."""
    reason: dict[str, str] = {}
    for e in episodes:
        why = e.meta.get(EXCLUDED) or ("nonfinite_reward" if nonfinite_reward(e) else None)
        if why:
            reason.setdefault(e.group_id, str(why))
    if not reason:
        return list(episodes)
    return [
        dataclasses.replace(e, meta={**e.meta, EXCLUDED: e.meta.get(EXCLUDED) or reason[e.group_id]})
        if e.group_id in reason else e
        for e in episodes
    ]  # fmt: skip


def zero_advantage_view(ep: Episode) -> Episode:
    """What a task sampler sees of a dropped group's episode: every reward and outcome 0, so the
    group counts as a zero-advantage group (all-equal returns)."""
    turns = tuple(dataclasses.replace(t, reward=0.0) for t in ep.turns)
    outcome = {k: 0.0 if isinstance(v, (int, float)) else v for k, v in ep.outcome.items()}
    return dataclasses.replace(ep, turns=turns, outcome=outcome)


def split_for_training(episodes: Sequence[Episode]) -> tuple[list[Episode], list[Episode], dict[str, float]]:
    """(trained episodes, Monte-Carlo-only rollouts, drop metrics): groups marked `train_excluded`
    leave both lists and are counted per reason as `dropped_groups_<reason>` and `dropped_groups`."""
    marked = mark_excluded_groups(episodes)
    reasons: dict[str, str] = {e.group_id: str(e.meta[EXCLUDED]) for e in marked if excluded(e)}
    metrics = {"dropped_groups": float(len(reasons)), "dropped_groups_nonfinite": 0.0,
               "dropped_groups_generation_error": 0.0}  # fmt: skip
    for why in reasons.values():
        key = "dropped_groups_nonfinite" if why == "nonfinite_reward" else f"dropped_groups_{why}"
        metrics[key] = metrics.get(key, 0.0) + 1.0
    kept = [e for e in marked if not excluded(e)]
    trained = [e for e in kept if not e.meta.get(MC_ROLLOUT)]
    rollouts = [e for e in kept if e.meta.get(MC_ROLLOUT)]
    return trained, rollouts, metrics


def _frozen_copy(policy: Any) -> Any:
    ref = copy.copy(policy)
    ref.model = copy.deepcopy(policy.model)
    for p in ref.model.parameters():
        p.requires_grad_(False)
    ref.model.eval()
    return ref


def _episode_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    if not episodes:
        return {}
    n = len(episodes)
    return {
        "reward": sum(e.total_reward for e in episodes) / n,
        "success": sum(episode_success(e) for e in episodes) / n,
        "turns": sum(e.num_turns for e in episodes) / n,
        "invalid_frac": sum(t.invalid for e in episodes for t in e.turns) / max(sum(e.num_turns for e in episodes), 1),
        "episodes": float(n),
        "collector_truncated": sum(bool(e.outcome.get("collector_truncated")) for e in episodes) / n,
        "backend_errors": float(sum("backend_error" in t.info for e in episodes for t in e.turns)),
        "internal_errors": float(sum("internal_error" in t.info for e in episodes for t in e.turns)),
        "action_tokens": float(sum(len(t.action_ids) for e in episodes for t in e.turns)),
    }
