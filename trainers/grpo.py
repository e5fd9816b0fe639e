"""GRPOTrainer: critic-free policy optimisation with any registered credit estimator.

GRPO (DeepSeekMath, arXiv 2402.03300) samples a group of episodes per task and uses group-relative
advantages; here the advantage comes from any estimator in `creditgym.credit.ESTIMATORS` (grpo,
rloo, gigpo, turn_return, igpo, ... or your own `@register_estimator`), and the loss from
METHODS.md section 1 (PPO/DAPO clipping, Dr. GRPO aggregation, KL, entropy, TIS).

    trainer = GRPOTrainer(policy, "creditgym/SearchEasy-v0", GRPOConfig(estimator="gigpo", steps=20))
    summary = trainer.train()

One step (`_step`) reads top to bottom: collect (with the probes, greedy runs and branches the
estimator's `needs` ask for) -> reward transforms (rewards.py: TTRL, OTC-GRPO; state checkpointed)
-> DAPO dynamic sampling on the transformed rewards -> drop poisoned groups -> credit (pack, DAPO
overlong shaping, KL in the reward, Monte-Carlo or critic values, `credit.compute`) -> task-sampler
update with the advantages (curriculum.py: SEC) -> `policy_update` (update.py, a function of explicit inputs) -> critic fit (PPO) -> sync the generator
-> log. Self-play trains one learner per role (`policies={role: policy}`); each role's episodes
update only that role's policy. PPOTrainer (ppo.py) is this loop with a `Critic` per role.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from creditgym.agents.base import Sampling, TrainablePolicy, WeightSyncedGenerator
from creditgym.agents.offline import mc_values
from creditgym.agents.probes import GoldAnswerProbe, SIOPProbe
from creditgym.agents.rollout import Collector, derive_seed
from creditgym.batch import CreditBatch
from creditgym.credit import ESTIMATORS, Advantages, compute
from creditgym.credit.registry import check_branches_spec, knob_default, trains_on_branches
from creditgym.registry import difficulty_presets
from creditgym.store import RolloutStore
from creditgym.trainers import flowrl, losses
from creditgym.trainers.async_collect import (
    StalenessPipeline,
    clone_weights,
    snapshot_generator,
    weight_loader,
    with_version,
)
from creditgym.trainers.curriculum import CURRICULA, StatefulSampler, TaskSampler, UniformSampler
from creditgym.trainers.logprobs import row_logprobs
from creditgym.trainers.loop import TrainerLoop, check_finite_config
from creditgym.trainers.rewards import (
    RewardTransform,
    apply_reward_transforms,
    build_reward_transforms,
    tool_metrics,
)
from creditgym.trainers.run_log import StageTimer
from creditgym.trainers.schedule import Learner, build_optimizer
from creditgym.trainers.selfplay import OpponentPools, frozen_snapshot
from creditgym.trainers.update import policy_update
from creditgym.trajectory import (
    MC_ROLLOUT,
    Episode,
    TaskSpec,
    episode_metrics,
    episode_success,
    excluded,
    mark_excluded_groups,
    split_for_training,
    zero_advantage_view,
)

if TYPE_CHECKING:
    from creditgym.trainers.ppo import Critic

__all__ = ["GRPOConfig", "GRPOTrainer", "RLConfig"]

log = logging.getLogger(__name__)

PROBES = {"gold": GoldAnswerProbe, "siop": SIOPProbe}
"""The probe each `needs["probe"]` key asks the Collector to run."""


@dataclass
class RLConfig:
    """Shared collection, loss and bookkeeping settings of the on-policy RL trainers."""

    # --------------------------------------------------------------- credit
    estimator: str = "grpo"
    """Registered estimator name (`creditgym.credit.ESTIMATORS`); its `needs` configure collection."""
    estimator_cfg: dict[str, Any] = field(default_factory=dict)
    """Knobs passed to `credit.compute(estimator, batch, **estimator_cfg)` (checked strictly)."""
    collect_overrides: dict[str, Any] = field(default_factory=dict)
    """Override the estimator's collection needs, e.g. `{"branches": {"at": "every_turn", "n": 2}}`."""
    outcome_key: str | None = None
    """`Episode.outcome` entry packed as `outcome_B` (default: the estimator's need, else the return)."""
    reward_transforms: list[str] = field(default_factory=list)
    """Registered reward transforms (`creditgym.trainers.rewards.REWARD_TRANSFORMS`: "ttrl", "otc_grpo",
    ...) applied in order to each collected round before dynamic sampling and credit."""
    reward_transform_cfg: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Knobs per transform name, e.g. `{"otc_grpo": {"c": 1.0}}`."""
    curriculum: str = "uniform"
    """Task sampler over `categories` when none is passed: "uniform" or "sec" (SEC, arXiv 2505.14970)."""
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Task categories: name -> env kwargs, e.g. `{"hops=1": {"hops": [1, 1]}}` (empty: the env's own tasks)."""
    curriculum_cfg: dict[str, Any] = field(default_factory=dict)
    """Knobs of the curriculum sampler, e.g. `{"alpha": 0.5, "tau": 1.0}` for SEC."""
    # --------------------------------------------------------------- collection
    steps: int = 20
    """Collect-credit-update rounds."""
    num_groups: int = 4
    """Groups (tasks) per round."""
    group_size: int = 8
    """Episodes per group (GRPO, arXiv 2402.03300, uses 64 for math; 8 is common for agents)."""
    temperature: float = 1.0
    """Sampling temperature (also used for every recomputed logprob)."""
    top_p: float = 1.0
    max_new_tokens: int = 64
    """Tokens per action (the generation cap L_max of DAPO's overlong shaping)."""
    max_context_tokens: int | None = None
    """Token budget of one context (None: the policy's declared context length, else
    `agents.rollout_history.DEFAULT_MAX_CONTEXT_TOKENS`); a `full`-history episode reaching it ends
    `collector_truncated`."""
    history: str | None = None
    """What the policy sees each turn: "full", "window" (goal, last action, current observation) or
    "window:K" (last K actions); None = the env's `metadata["history"]` (Device: window, k=1)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Env constructor kwargs (merged under the trainer's `env_kwargs=` argument)."""
    env_workers: int = 0
    """Env workers that reset and step the envs while generation stays batched here (agents/env_workers.py):
    0 steps them one after the other in this process; N overlaps env latency (sandbox, retrievers)."""
    env_worker_backend: str = "thread"
    """Where the env workers run: "thread", "process" or "ray" (`pip install 'creditgym[ray]'`)."""
    max_staleness: int = 0
    """Async collection (trainers/async_collect.py): the rollout of step t+1 runs on a background thread
    while step t updates, on a copy of the policy (or `generator=`) at most this many versions behind
    the learner; turns TIS on (`tis_cap=2.0` unless set). 0 = the synchronous loop."""
    # --------------------------------------------------------------- optimisation
    lr: float = 1e-5
    """AdamW learning rate: 1e-6..1e-5 for pretrained LLMs (verl/TRL); the tiny model takes ~1e-4."""
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    """After warm-up: "constant" (TRL/verl default), "linear" or "cosine" decay to min_lr_ratio * lr
    over the planned optimizer steps (steps * ppo_epochs * mini_batches)."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of lr under a decaying schedule."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    """Gradient clipping by norm (verl default 1.0)."""
    ppo_epochs: int = 1
    """Passes over each round's episodes (GRPO's mu; 1 = strictly on-policy, ratio 1)."""
    mini_batches: int = 1
    """Optimizer steps per epoch (episodes split evenly, seeded)."""
    token_budget: int = 8192
    """Padded tokens per micro-batch; gradient accumulation equals one big batch exactly."""
    skip_zero_adv_rows: bool = True
    """Leave rows with all-zero advantages out of the forward/backward pass (their policy gradient is
    exactly zero; normalisers still count them). Ignored when a KL or entropy term is in the loss."""
    # --------------------------------------------------------------- policy loss
    clip_eps: float = 0.2
    """PPO ratio clip (arXiv 1707.06347)."""
    clip_eps_low: float | None = None
    """Lower clip bound (default clip_eps)."""
    clip_eps_high: float | None = None
    """Upper clip bound (default clip_eps; DAPO's clip-higher uses 0.28, arXiv 2503.14476)."""
    dual_clip_c: float | None = None
    """Dual-clip constant c > 1 (arXiv 1912.09729); None = off, 3.0 when on (verl)."""
    per_turn_clip: bool = False
    """Scale the clip range per turn with the estimator's `clip_scale_BK` (A2TGPO)."""
    loss_agg: str = "token-mean"
    """token-mean (DAPO), seq-mean-token-mean (GRPO), seq-mean-token-sum, seq-mean-token-sum-norm (Dr. GRPO)."""
    loss_norm_const: float | None = None
    """Dr. GRPO's constant; default max_turns * max_new_tokens when that aggregation is chosen."""
    kl_coef: float = 0.0
    """KL-to-reference weight (0 = off, as DAPO; GRPO used 0.04, verl 0.001)."""
    kl_estimator: str = "k3"
    """k1, k2 or k3 (Schulman 2020); GRPO's choice is k3."""
    kl_in_reward: bool = False
    """Subtract kl_coef * k1 from turn rewards before credit instead of adding a loss term."""
    entropy_coef: float = 0.0
    """Entropy bonus weight (0 in LLM practice; CleanRL PPO uses 0.01)."""
    tis_cap: float | None = None
    """Truncated importance sampling cap between generator and trainer (METHODS.md 1.8). None: 2.0
    whenever another model samples (`generator=`, e.g. VLLMPolicy or an OpenAIPolicy server, or
    `max_staleness > 0`), off when the trained policy samples; 0 turns it off even then."""
    tis_level: str = "token"
    # --------------------------------------------------------------- DAPO extras
    dynamic_sampling: bool = False
    """DAPO: keep only groups whose outcomes are not all equal, collecting more rounds as needed."""
    dynamic_sampling_metric: str = "return"
    """"return" (sum of turn rewards) or "success" (outcome success)."""
    dynamic_sampling_max_batches: int = 10
    """Generation rounds before giving up (verl's DAPO recipe)."""
    allow_short_batch: bool = False
    """Train on fewer kept groups instead of raising when the rounds run out."""
    overlong_cache_tokens: int | None = None
    """DAPO soft overlong punishment buffer (None = off)."""
    overlong_penalty: float = 1.0
    overlong_scope: str = "turn"
    """"turn" or "episode"."""
    overlong_filter: bool = False
    """Mask out episodes with a turn cut by the token cap."""
    # --------------------------------------------------------------- self-play opponent pools
    opponent_pool_every: int = 0
    """Freeze each trained role into its opponent pool every N updates (0 = off; trainers/selfplay.py):
    two trained roles play snapshots of each other, one role an env opponent named "pool"."""
    opponent_pool_latest_prob: float = 0.5
    """Probability of drawing a pool's latest snapshot (else uniform over the pool; ENVS.md section 6)."""
    # --------------------------------------------------------------- LoRA, run bookkeeping
    lora: bool = False
    """Wrap the model in a peft LoRA adapter; the KL reference is the base model with adapters off."""
    lora_r: int = 8
    lora_alpha: int = 16
    seed: int = 0
    out_dir: str | None = None
    """Metrics (metrics.jsonl), tensorboard logs (tb/), episodes.jsonl and checkpoints go here."""
    save_episodes: bool = True
    """Append every collected episode to out_dir/episodes.jsonl."""
    checkpoint_every: int = 0
    """Write out_dir/checkpoint.pt every N rounds (0 = never)."""
    resume: bool = False
    """Continue from out_dir/checkpoint.pt when it exists."""
    progress: bool = False
    """Rich progress bar."""
    tensorboard: bool = True
    wandb_project: str | None = None
    """Also log to Weights & Biases (needs the wandb extra)."""

    def __post_init__(self) -> None:
        check_finite_config(self)


@dataclass
class GRPOConfig(RLConfig):
    """Every knob of RLConfig (collection, clipping, aggregation, KL, entropy, DAPO, LoRA, run
    bookkeeping), with GRPO's defaults: estimator "grpo", one epoch (strictly on-policy)."""

    objective: str = "pg"
    """"pg" (clipped policy gradient) or "flowrl" (FlowRL's flow balance, arXiv 2509.15207; trainers/flowrl.py)."""
    flowrl_beta: float = 15.0
    """FlowRL reward scale beta (paper: 15)."""
    flowrl_is_eps: float = 0.2
    """FlowRL importance-weight clip: w in [1 - eps, 1 + eps] (paper: 0.2)."""
    flowrl_is_clip: str = "paper"
    """"paper" (clip to 1 +- eps), "max10" (an older release: upper clamp 10) or "none"."""
    logz_layers: int = 3
    """Linear layers of FlowRL's log-partition head on the prompt's last hidden states (release: 3)."""


DEFAULT_TIS_CAP = 2.0
"""TIS cap when a separate generator samples (Yao et al.'s 32B setting, METHODS.md 1.8)."""


def resolve_tis_cap(cfg: RLConfig, separate_generator: bool) -> RLConfig:
    """`cfg` with the TIS cap in force: DEFAULT_TIS_CAP when another model samples and `tis_cap` is
    None (its logprobs differ from the trainer's even for the same weights), None for the explicit
    opt-out `tis_cap=0`; otherwise `cfg` itself."""
    if cfg.tis_cap is not None and cfg.tis_cap < 0:
        raise ValueError(f"tis_cap={cfg.tis_cap}: use a cap > 0 (2.0 is usual), 0 to turn TIS off, or None for the default")
    if cfg.tis_cap is None and separate_generator:
        log.info("a separate generator samples: truncated importance sampling on, tis_cap=%s (tis_cap=0 turns it off)",
                 DEFAULT_TIS_CAP)  # fmt: skip
        return dataclasses.replace(cfg, tis_cap=DEFAULT_TIS_CAP)
    return dataclasses.replace(cfg, tis_cap=None) if cfg.tis_cap == 0 else cfg


def estimator_needs(cfg: RLConfig) -> dict[str, Any]:
    """The estimator's `needs` with `collect_overrides` applied, unset (None/False) entries dropped."""
    if cfg.estimator not in ESTIMATORS:
        raise KeyError(f"unknown estimator {cfg.estimator!r}; registered: {sorted(ESTIMATORS)}")
    needs = {**ESTIMATORS[cfg.estimator].needs, **cfg.collect_overrides}  # type: ignore[attr-defined]
    return {k: v for k, v in needs.items() if v is not None and v is not False}


def add_turn_rewards(batch: CreditBatch, delta_BK: torch.Tensor) -> CreditBatch:
    """`batch` with `delta_BK` added to the turn rewards (and to the outcome when it is their sum)."""
    changes: dict[str, Any] = {"rewards_BK": batch.rewards_BK + delta_BK}
    if batch.meta.get("outcome_key") is None:
        changes["outcome_B"] = batch.outcome_B + delta_BK.sum(1).to(batch.outcome_B.dtype)
    return dataclasses.replace(batch, **changes)


def build_task_sampler(cfg: RLConfig, env_id: str | None = None) -> TaskSampler:
    """The config's curriculum (`CURRICULA[cfg.curriculum]`) over `cfg.categories`; a curriculum other
    than uniform without categories runs over the env's difficulty presets (`difficulty_presets`)."""
    if cfg.curriculum not in CURRICULA:
        raise ValueError(f"unknown curriculum {cfg.curriculum!r}; choose one of {sorted(CURRICULA)}")
    if cfg.curriculum == "uniform":
        if cfg.curriculum_cfg:
            raise ValueError(f"the uniform curriculum takes no knobs; drop curriculum_cfg={cfg.curriculum_cfg}")
        return UniformSampler(dict(cfg.categories))
    categories = dict(cfg.categories)
    if not categories and env_id is not None:
        try:
            categories = difficulty_presets(env_id)
        except ValueError:
            categories = {}
    if not categories:
        raise ValueError(f"curriculum {cfg.curriculum!r} needs categories (the env {env_id!r} has no difficulty presets), "
                         "e.g. categories={'hops=1': {'hops': [1, 1]}, 'hops=2': {'hops': [2, 2]}}")  # fmt: skip
    sampler: TaskSampler = CURRICULA[cfg.curriculum](categories, **cfg.curriculum_cfg)
    return sampler


def turn_advantages(batch: CreditBatch, adv: Advantages) -> dict[str, torch.Tensor]:
    """Episode id -> the advantages of its turns (`adv.turn_BK` over the valid turns)."""
    turn_BK = adv.turn_BK.detach().cpu()
    mask_BK = batch.turn_mask_BK.detach().cpu().bool()
    return {eid: turn_BK[b][mask_BK[b]] for b, eid in enumerate(batch.episode_ids)}


class GRPOTrainer(TrainerLoop):
    """Critic-free trainer. Refuses estimators that need critic values (use PPOTrainer)."""

    description = "grpo"
    critic_cls: type[Critic] | None = None
    """PPOTrainer sets its `Critic`: one per role, holding the value model, its optimizer and its fit."""

    def __init__(
        self,
        policy: TrainablePolicy | None = None,
        env_id: str | None = None,
        config: RLConfig | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        policies: Mapping[str, TrainablePolicy] | None = None,
        generator: WeightSyncedGenerator | None = None,
        task_sampler: TaskSampler | None = None,
        collector: Collector | None = None,
        reward_transforms: Sequence[RewardTransform] = (),
    ):
        cfg = config if config is not None else GRPOConfig()
        name = type(self).__name__
        cfg = resolve_tis_cap(cfg, generator is not None or cfg.max_staleness > 0)  # METHODS.md 1.8
        if isinstance(cfg, GRPOConfig) and cfg.objective not in ("pg", "flowrl"):
            raise ValueError(f"unknown objective {cfg.objective!r}; use 'pg' or 'flowrl'")
        flow_on = isinstance(cfg, GRPOConfig) and cfg.objective == "flowrl"
        if flow_on:
            flowrl.check_config(cfg)
        if policy is None and not policies:
            raise ValueError(f"{name} needs a policy (or policies={{role: policy}} for self-play)")
        if env_id is None and collector is None:
            raise ValueError(f"{name} needs an env_id (or a ready collector=)")
        self.policies: dict[str, TrainablePolicy] = dict(policies) if policies else {"agent": policy}  # type: ignore[dict-item]
        for role, p in self.policies.items():
            if not isinstance(p, TrainablePolicy):
                raise TypeError(f"{name} trains a TrainablePolicy (HFPolicy: tiny.build, pretrained.load); the {role!r} "
                                f"policy is a {type(p).__name__}, which cannot be trained; pass it as generator= or an opponent")  # fmt: skip
        if generator is not None and not isinstance(generator, WeightSyncedGenerator):
            raise TypeError(f"generator {type(generator).__name__} has no sync_from(policy): it cannot take the trained weights")
        self.env_id = env_id
        self.env_kwargs = {**cfg.env_kwargs, **dict(env_kwargs or {})}
        self.generator = generator
        self.task_sampler: TaskSampler = task_sampler if task_sampler is not None else build_task_sampler(cfg, env_id)
        # reward transforms (TTRL, OTC-GRPO, ...): the config's by name, then the objects passed in
        self.reward_transforms = build_reward_transforms(cfg.reward_transforms, cfg.reward_transform_cfg)
        self.reward_transforms += [(str(getattr(t, "name", None) or getattr(t, "__name__", type(t).__name__)), t)
                                   for t in reward_transforms]  # fmt: skip
        self.reward_states: list[dict[str, Any]] = [{} for _ in self.reward_transforms]
        self.needs = estimator_needs(cfg)
        self._check_config(cfg)
        spec = self.needs.get("branches")
        if spec:
            check_branches_spec(cfg.estimator, spec)
        # whether branch rollouts are trained on, or only give Monte-Carlo values (`needs["branches"]["train"]`)
        self.train_on_branches = trains_on_branches(ESTIMATORS[cfg.estimator], spec, cfg.estimator_cfg) if spec else False
        if cfg.lora:
            for p in self.policies.values():
                if not p.has_adapter:
                    p.add_lora(r=cfg.lora_r, alpha=cfg.lora_alpha)
        planned = cfg.steps * cfg.ppo_epochs * cfg.mini_batches
        betas = (float(cfg.adam_betas[0]), float(cfg.adam_betas[1]))
        # FlowRL: one logZ head per role, beside the policy (optimised and checkpointed with it, never synced)
        self.logz_heads: dict[str, flowrl.LogZHead] = {}
        if isinstance(cfg, GRPOConfig) and flow_on:
            for r, p in self.policies.items():
                head = flowrl.LogZHead(p.hidden_size, cfg.logz_layers, seed=cfg.seed)
                self.logz_heads[r] = head.to(next(p.model.parameters()).device)
        learners = {
            role: Learner(p, *build_optimizer(flowrl.with_head(p.model, self.logz_heads.get(role)), cfg.lr,
                                              cfg.weight_decay, cfg.warmup_steps, betas,
                                              schedule=cfg.lr_schedule, total_steps=planned, min_lr_ratio=cfg.min_lr_ratio))
            for role, p in self.policies.items()
        }  # fmt: skip
        # the KL reference: with LoRA the policy itself with adapters off (`reference()`), else a frozen copy
        self._refs = {r: frozen_snapshot(p) for r, p in self.policies.items() if (cfg.kl_coef > 0 or flow_on) and not p.has_adapter}
        self.critics: dict[str, Critic] = {r: self.critic_cls(p, cfg) for r, p in self.policies.items()} if self.critic_cls else {}
        self.rng = np.random.default_rng(cfg.seed)
        self.collect_calls = 0
        self.timer = StageTimer()
        self.pools = (OpponentPools(self.policies, cfg.opponent_pool_every, cfg.opponent_pool_latest_prob, self.env_kwargs,
                                    Sampling(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens), seed=cfg.seed)
                      if cfg.opponent_pool_every else None)  # fmt: skip
        if self.pools is not None:
            self.env_kwargs = self.pools.env_kwargs(self.env_kwargs)  # a single-role "pool" opponent
        self.pipeline = self._build_pipeline(cfg, collector)  # max_staleness > 0: collect on a worker thread
        self._owns_collector = collector is None  # close() closes only a Collector it built
        self.collector = collector if collector is not None else self._build_collector(cfg)
        self._setup_loop(learners, cfg, cfg.steps)
        self.maybe_resume()
        self.store = RolloutStore(self.out_dir / "episodes.jsonl", fsync=False) if self.out_dir and cfg.save_episodes else None

    # ------------------------------------------------------------------ configuration
    def _check_config(self, cfg: RLConfig) -> None:
        values = self.needs.get("values")
        if values == "critic" and self.critic_cls is None:
            raise ValueError(f"estimator {cfg.estimator!r} needs critic values; GRPOTrainer is critic-free: use PPOTrainer")
        if values != "critic" and self.critic_cls is not None:
            raise ValueError(f"PPOTrainer trains a critic for estimator values; {cfg.estimator!r} needs none: use GRPOTrainer")
        if values == "mc" and not self.needs.get("branches"):
            raise ValueError(
                f"estimator {cfg.estimator!r} needs Monte-Carlo values from branches; set "
                "collect_overrides={'branches': {'at': 'every_turn', 'n': 4}}"
            )
        if cfg.per_turn_clip and cfg.estimator not in ("a2tgpo",):
            log.info("per_turn_clip=True: estimator %r must supply clip_scale_BK", cfg.estimator)
        if cfg.loss_agg not in losses.AGG_MODES:
            raise ValueError(f"unknown loss_agg {cfg.loss_agg!r}; choose one of {losses.AGG_MODES}")
        if cfg.dynamic_sampling_metric not in ("return", "success"):
            raise ValueError("dynamic_sampling_metric must be 'return' or 'success'")
        if "ttrl" in cfg.reward_transforms and (cfg.dynamic_sampling_metric == "success" or cfg.outcome_key):
            raise ValueError("ttrl trains without labels, but dynamic_sampling_metric='success' and outcome_key read "
                             "the env's gold-scored outcome: use dynamic_sampling_metric='return' and no outcome_key")  # fmt: skip
        if cfg.overlong_scope not in ("turn", "episode"):
            raise ValueError("overlong_scope must be 'turn' or 'episode'")
        if cfg.max_staleness < 0:
            raise ValueError(f"max_staleness={cfg.max_staleness}: use 0 (synchronous) or a positive bound on the "
                             "policy versions between generator and learner (1 overlaps one collection with one update)")  # fmt: skip
        if cfg.max_staleness > 0 and (len(self.policies) > 1 or "agent" not in self.policies or cfg.opponent_pool_every):
            raise ValueError("max_staleness > 0 trains one policy; self-play and opponent pools collect with the live "
                             "policies: set max_staleness=0")  # fmt: skip
        if cfg.max_staleness > 0 and cfg.dynamic_sampling:
            raise ValueError("max_staleness > 0 collects one round per step; DAPO dynamic sampling needs a variable "
                             "number of rounds: set dynamic_sampling=False or max_staleness=0")  # fmt: skip

    def _build_pipeline(self, cfg: RLConfig, collector: Collector | None) -> StalenessPipeline | None:
        """Under max_staleness > 0: the generator (a copy of the policy unless `generator=` was given)
        and the worker that collects on it (async_collect.py)."""
        if cfg.max_staleness == 0:
            return None
        if self.generator is None:
            if collector is not None:
                raise ValueError("max_staleness > 0 collects on a generator separate from the learner; with a ready "
                                 "collector= pass that collector's policy as generator= too, or set max_staleness=0")  # fmt: skip
            self.generator = snapshot_generator(self.policies["agent"])
        return StalenessPipeline(cfg.max_staleness, weight_loader(self.generator, self.policies["agent"]))

    def _build_collector(self, cfg: RLConfig) -> Collector:
        probe = self.needs.get("probe")
        if probe is not None and probe not in PROBES:
            raise ValueError(f"estimator {cfg.estimator!r} needs probe {probe!r}; known probes: {sorted(PROBES)}")
        self_play = len(self.policies) > 1 or "agent" not in self.policies
        return Collector(
            self.generator if self.generator is not None else (None if self_play else self.policies["agent"]),
            self.env_id,
            group_size=cfg.group_size,
            env_kwargs=self.env_kwargs,
            policies=dict(self.policies) if self_play else None,
            greedy_baseline=bool(self.needs.get("greedy", False)),
            probes=[PROBES[probe]()] if probe is not None else [],
            sampling=Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens),
            max_context_tokens=cfg.max_context_tokens,
            history=cfg.history,
            workers=cfg.env_workers,
            worker_backend=cfg.env_worker_backend,
        )

    def state_dict(self) -> dict[str, Any]:
        """Data position (the task generator, the collect counter, the Collector's counters) and critics."""
        # first: waits for the async worker, which moves the collect counter, Collector and reward states
        pipeline = self.pipeline.state_dict() if self.pipeline is not None else None
        return {
            "rng": self.rng.bit_generator.state,
            "collect_calls": self.collect_calls,
            "collector": self.collector.state_dict(),
            "critics": {role: critic.state_dict() for role, critic in self.critics.items()},
            "logz_heads": {role: head.checkpoint() for role, head in self.logz_heads.items()},
            "reward_transforms": copy.deepcopy(self.reward_states),
            "task_sampler": self.task_sampler.state_dict() if isinstance(self.task_sampler, StatefulSampler) else None,
            "opponent_pools": self.pools.state_dict() if self.pools is not None else None,
            "pipeline": pipeline,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.pipeline is not None and state.get("pipeline") is not None:
            self.pipeline.load_state_dict(state["pipeline"])
        self.rng.bit_generator.state = state["rng"]
        self.collect_calls = int(state["collect_calls"])
        self.collector.load_state_dict(state["collector"])
        if self.pools is not None:
            self.pools.load_state_dict(state["opponent_pools"])
        for role, critic_state in state.get("critics", {}).items():
            self.critics[role].load_state_dict(critic_state)
        for role, head_state in state.get("logz_heads", {}).items():
            self.logz_heads[role].restore(head_state)
        if "reward_transforms" in state:
            if len(state["reward_transforms"]) != len(self.reward_transforms):
                raise ValueError(f"the checkpoint holds {len(state['reward_transforms'])} reward-transform states for "
                                 f"{len(self.reward_transforms)} transforms; resume with the run's reward_transforms")  # fmt: skip
            self.reward_states = copy.deepcopy(list(state["reward_transforms"]))
        if state.get("task_sampler") is not None:
            if not isinstance(self.task_sampler, StatefulSampler):
                raise ValueError(f"the checkpoint holds a task sampler's state, but {type(self.task_sampler).__name__} "
                                 "has no load_state_dict; resume with the run's curriculum (RLConfig.curriculum)")  # fmt: skip
            self.task_sampler.load_state_dict(state["task_sampler"])
        if self.generator is not None and self.pipeline is None:  # resumed: the generator samples with the restored weights
            self.generator.sync_from(self.policies["agent"] if "agent" in self.policies else next(iter(self.policies.values())))

    # ------------------------------------------------------------------ collect
    def _collect_round(self, specs: list[TaskSpec] | None = None, step: int | None = None,
                       ) -> tuple[list[TaskSpec], list[Episode], dict[str, float]]:  # fmt: skip
        """One generation round: the sampled specs, their episodes (reward transforms applied) and the
        transforms' metrics. The async worker passes the specs it was given and the step its batch is for."""
        cfg = self.config
        specs = self.task_sampler.sample(cfg.num_groups, self.rng) if specs is None else specs
        seed = derive_seed(cfg.seed, self.collect_calls)
        self.collect_calls += 1
        self.collector.set_env_attr("training_step", self.step_idx if step is None else step)  # env curricula (SimSearch's noise)
        if self.pools is not None:  # self-play: snapshot every N updates, play drawn opponents
            episodes = mark_excluded_groups(self.pools.collect(self.collector, cfg.num_groups, seed, specs, self.step_idx))
        else:
            episodes = mark_excluded_groups(self.collector.collect(cfg.num_groups, seed=seed, tasks=specs))
        branches = self.needs.get("branches")
        if branches:
            rollouts = list(self.collector.branch_for([e for e in episodes if not excluded(e)], branches))
            if not self.train_on_branches:  # Monte-Carlo values only (vineppo, chain spo)
                rollouts = [dataclasses.replace(e, meta={**e.meta, MC_ROLLOUT: True}) for e in rollouts]
            episodes = mark_excluded_groups([*episodes, *rollouts])
        metrics: dict[str, float] = {}
        if self.reward_transforms:  # TTRL, OTC-GRPO, ...: on the live groups, before any filter reads rewards
            shaped, self.reward_states, metrics = apply_reward_transforms(
                self.reward_transforms, [e for e in episodes if not excluded(e)], self.reward_states
            )
            episodes = [*shaped, *(e for e in episodes if excluded(e))]  # a transform may drop episodes (TTRL)
        return specs, episodes, metrics

    def collect_rounds(self) -> tuple[list[Episode], list[tuple[list[TaskSpec], list[Episode]]], dict[str, float]]:
        """(the episodes to train on, every round's specs and episodes, metrics): one round; with
        dynamic sampling, further rounds until `num_groups` groups with unequal (transformed) outcomes
        are kept (DAPO, arXiv 2503.14476)."""
        cfg = self.config
        if not cfg.dynamic_sampling:
            specs, eps, metrics = self._collect_round()
            return eps, [(specs, eps)], metrics
        kept: list[list[Episode]] = []
        played: list[tuple[list[TaskSpec], list[Episode]]] = []
        metrics = {}
        seen = rounds = 0
        while len(kept) < cfg.num_groups and rounds < cfg.dynamic_sampling_max_batches:
            specs, eps, metrics = self._collect_round()
            played.append((specs, eps))
            rounds += 1
            groups: dict[tuple[str, str], list[Episode]] = {}
            for e in eps:
                groups.setdefault((e.group_id, e.role), []).append(e)
            seen += len(groups)
            for members in groups.values():
                trained = [e for e in members if not e.meta.get(MC_ROLLOUT)]
                if any(excluded(e) for e in members) or not trained:
                    continue
                score = episode_success if cfg.dynamic_sampling_metric == "success" else (lambda e: e.total_reward)
                r = torch.tensor([score(e) for e in trained], dtype=torch.float64)
                if float(r.max() - r.min()) > 1e-8:
                    kept.append(members)
        if len(kept) < cfg.num_groups and not cfg.allow_short_batch:
            raise RuntimeError(
                f"dynamic sampling kept {len(kept)} of {cfg.num_groups} groups after {rounds} rounds: every other "
                "group had equal outcomes. Lower the difficulty, raise group_size, or set allow_short_batch=True"
            )
        kept = kept[: cfg.num_groups]
        metrics = {**metrics, "ds/kept_frac": len(kept) / max(seen, 1), "ds/gen_rounds": float(rounds)}
        return [e for g in kept for e in g], played, metrics

    def collect(self) -> tuple[list[Episode], dict[str, float]]:
        """The episodes to train on and the collection metrics (`collect_rounds` without the rounds)."""
        episodes, _, metrics = self.collect_rounds()
        return episodes, metrics

    def update_task_sampler(self, played: Sequence[tuple[list[TaskSpec], list[Episode]]],
                            turn_adv: Mapping[str, torch.Tensor]) -> dict[str, float]:  # fmt: skip
        """Tell the task sampler what each round's specs gave: every played episode (Monte-Carlo
        rollouts aside) with its per-turn advantages, zeros for groups that were not trained (dropped
        by dynamic sampling or for non-finite rewards; seen with zero rewards). Returns the share of
        this step's groups per category and, for a sampler with `probs()` (SEC), its new distribution."""
        specs_played = [s for specs, _ in played for s in specs]
        for specs, eps in played:
            shown = [zero_advantage_view(e) if excluded(e) else e for e in eps if not e.meta.get(MC_ROLLOUT)]
            advantages = [turn_adv.get(e.episode_id, torch.zeros(e.num_turns)) for e in shown]
            self.task_sampler.update(specs, shown, advantages)
        cats = sorted({s.category for s in specs_played})
        if cats == ["default"]:
            return {}
        out = {f"curriculum/share/{c}": sum(s.category == c for s in specs_played) / len(specs_played) for c in cats}
        probs = getattr(self.task_sampler, "probs", None)
        if callable(probs):
            out.update({f"curriculum/p/{c}": float(p) for c, p in probs().items()})
        return out

    # ------------------------------------------------------------------ credit
    def _episode_token_budget(self) -> int:
        max_turns = int(self.env_kwargs.get("max_turns", 0) or 0) or 6
        return max_turns * self.config.max_new_tokens

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
            batch = add_turn_rewards(batch, pen_BK.to(batch.rewards_BK.dtype))
        if cfg.overlong_filter:
            for b, ep in enumerate(episodes):
                if any(t.info.get("finish_reason") == "length" for t in ep.turns):
                    mask_BT[b] = False
        return batch, mask_BT

    def _flow(self, role: str) -> flowrl.FlowObjective | None:
        """FlowRL's head and knobs for `role` (None under the clipped policy gradient)."""
        if role not in self.logz_heads:
            return None
        cfg = self.config
        return flowrl.FlowObjective(self.logz_heads[role], cfg.flowrl_beta, cfg.flowrl_is_eps, cfg.flowrl_is_clip)

    def _ref_logprobs(self, role: str, batch: CreditBatch, mask_BT: torch.Tensor) -> torch.Tensor | None:
        """The reference's logprobs on the trainable tokens `mask_BT` (0 elsewhere; nothing reads them)."""
        if self.config.kl_coef <= 0 and not self.logz_heads:  # FlowRL's loss always reads the reference
            return None
        if role in self._refs:
            return row_logprobs(self._refs[role], batch, self.config.temperature, mask_BT)
        with self.policies[role].reference():
            return row_logprobs(self.policies[role], batch, self.config.temperature, mask_BT)

    def _credit(
        self, role: str, episodes: Sequence[Episode], rollouts: Sequence[Episode] = ()
    ) -> tuple[CreditBatch, Advantages, torch.Tensor, torch.Tensor | None]:
        """Pack `episodes` (the trained ones), shape rewards, attach values and run the estimator;
        `rollouts` are branch rollouts used only for Monte-Carlo values (CREDIT.md 7)."""
        cfg = self.config
        outcome_key = cfg.outcome_key or self.needs.get("outcome_key")
        batch = CreditBatch.from_episodes(episodes, outcome_key=outcome_key, probe_key=self.needs.get("probe"))
        batch, mask_BT = self._shape_rewards(episodes, batch)
        ref_BT = self._ref_logprobs(role, batch, mask_BT)
        if ref_BT is not None and cfg.kl_in_reward:
            assert batch.logprobs_BT is not None
            old_BT = row_logprobs(self.policies[role], batch, cfg.temperature, mask_BT)
            k1_BT = losses.kl_terms(old_BT, ref_BT, "k1")
            shaped = losses.kl_reward_penalty(batch.rewards_BK, k1_BT, batch.token_turn_BT, mask_BT, cfg.kl_coef)
            batch = add_turn_rewards(batch, (shaped - batch.rewards_BK) * batch.turn_mask_BK)
        if self.needs.get("values") == "mc":  # discounted with the estimator's own gamma
            gamma = float(knob_default(ESTIMATORS[cfg.estimator], "gamma", cfg.estimator_cfg, 1.0))
            batch = batch.with_values(values_BK=mc_values(episodes, rollouts, gamma=gamma, num_slots=batch.K))
        if role in self.critics:
            batch = self.critics[role].attach_values(batch)
        adv = compute(cfg.estimator, batch, **cfg.estimator_cfg)
        return batch, adv, mask_BT, ref_BT

    # ------------------------------------------------------------------ one round
    def _step(self) -> dict[str, float]:
        with self.timer("rollout"):  # collect -> reward transforms -> dynamic sampling
            if self.pipeline is None:
                episodes, played, metrics = self.collect_rounds()
                episodes = with_version(episodes, self.step_idx)
            else:  # async: this step's batch from the worker, which starts on the next ones meanwhile
                episodes, played, metrics = self._collect_async()
        if self.store is not None:
            self.store.extend(episodes)
        return self.train_on(episodes, played, metrics)  # credit -> task sampler -> update -> critic -> sync

    def _collect_async(self) -> tuple[list[Episode], list[tuple[list[TaskSpec], list[Episode]]], dict[str, float]]:
        """Submit the batches up to step + max_staleness (generated by this version), then wait for
        this step's batch; its metrics gain the version gap and the overlap (async_collect.py)."""
        assert self.pipeline is not None
        cfg, model = self.config, self.policies["agent"].model
        self.pipeline.submit_up_to(self.step_idx, self.total_steps - 1, weights=functools.partial(clone_weights, model),
                                   specs_for=lambda: self.task_sampler.sample(cfg.num_groups, self.rng),
                                   collect=self._collect_batch)  # fmt: skip
        batch, wait_s = self.pipeline.take(self.step_idx)
        return batch.episodes, batch.played, {**batch.metrics, **self.pipeline.metrics(batch, self.step_idx, wait_s)}

    def _collect_batch(self, specs: list[TaskSpec], index: int,
                       ) -> tuple[list[Episode], list[tuple[list[TaskSpec], list[Episode]]], dict[str, float]]:  # fmt: skip
        """One async batch (on the worker): `collect_rounds` without dynamic sampling, for given specs."""
        specs, episodes, metrics = self._collect_round(specs, step=index)
        return episodes, [(specs, episodes)], metrics

    def close(self) -> None:
        """TrainerLoop.close, the async worker (if any) and the env workers of the Collector this
        trainer built (one passed in as `collector=` stays open: its owner closes it)."""
        super().close()
        if self.pipeline is not None:
            self.pipeline.close()
        if self._owns_collector:
            self.collector.close()
            self._owns_collector = False  # closed once

    def train(self) -> dict[str, float]:
        """TrainerLoop.train, then the async worker (if any) is stopped."""
        try:
            return super().train()
        finally:
            if self.pipeline is not None:
                self.pipeline.close()

    def train_on(
        self,
        episodes: Sequence[Episode],
        played: Sequence[tuple[list[TaskSpec], list[Episode]]] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """Credit -> task-sampler update -> policy update -> critic -> sync on `episodes` collected
        anywhere (this trainer's Collector, or a gateway whose server sampled the tokens and logprobs).

        `played` is every generation round's (specs, episodes) for the task sampler (None: the
        sampler is not told, as for episodes that came without specs); `metrics` are the collection's,
        extended and returned. It neither advances `step_idx` nor writes episodes.jsonl (`step()` and
        `_step` do: a caller outside the loop logs and counts itself). Under `max_staleness > 0` the
        generator's weights are the async worker's to load, so it does not sync them."""
        cfg = self.config
        metrics = dict(metrics) if metrics is not None else {}
        trained, rollouts, dropped = split_for_training(list(episodes))
        metrics.update(episode_metrics(trained))
        metrics.update(tool_metrics(trained))  # tool calls per episode, correct answers per call (OTC)
        metrics.update(dropped)
        if rollouts:
            metrics["mc_rollouts"] = float(len(rollouts))
        if not trained:
            metrics.update(self._skip("every group was dropped (non-finite rewards or generation errors)"))
        several = len(self.learners) > 1
        credited: dict[str, tuple[CreditBatch, Advantages, torch.Tensor, torch.Tensor | None]] = {}
        for role in self.learners:
            eps = [e for e in trained if e.role == role] if several else trained
            if not eps:
                continue
            roll = [e for e in rollouts if e.role == role] if several else rollouts
            prefix = f"{role}/" if several else ""
            with self.timer("credit"):
                batch, adv, mask_BT, ref_BT = self._credit(role, eps, roll)
            metrics.update({prefix + (k if k.startswith("adv/") else f"adv/{k}"): float(v) for k, v in adv.metrics.items()})
            if losses.has_nonfinite(adv.token_BT):
                metrics.update(self._skip(f"{role}: NaN or inf in the advantages"))
                continue
            if cfg.per_turn_clip and adv.clip_scale_BK is None:
                raise ValueError(
                    f"estimator {cfg.estimator!r} gives no clip_scale_BK; use a2tgpo or set per_turn_clip=False"
                )
            credited[role] = (batch, adv, mask_BT, ref_BT)
        # curriculum (SEC): every played group with its advantages, zero for the groups not trained
        if played is not None:
            metrics.update(self.update_task_sampler(played, {k: v for b, a, _, _ in credited.values()
                                                             for k, v in turn_advantages(b, a).items()}))  # fmt: skip
        for role, (batch, adv, mask_BT, ref_BT) in credited.items():
            prefix = f"{role}/" if several else ""
            with self.timer("update"):
                norm_const = cfg.loss_norm_const
                if cfg.loss_agg == "seq-mean-token-sum-norm" and not norm_const:
                    norm_const = self._episode_token_budget()
                out, skips = policy_update(self.learners[role], batch, adv, mask_BT, ref_BT, cfg, step=self.step_idx,
                                           norm_const=norm_const, flow=self._flow(role))  # fmt: skip
                for why in skips:
                    out.update(self._skip(why))
            metrics.update({f"{prefix}{k}": v for k, v in out.items()})
            with self.timer("critic"):  # PPO fits its critic on the returns; timed (as 0) for GRPO too
                if role in self.critics:
                    metrics.update({f"{prefix}{k}": v for k, v in self.critics[role].fit(batch, adv).items()})
        with self.timer("sync"):
            if self.generator is not None and self.pipeline is None:  # async: the worker loads its weights
                self.generator.sync_from(self.policies["agent"] if "agent" in self.policies else next(iter(self.policies.values())))
        metrics.update(self.timer.pop())
        return metrics
