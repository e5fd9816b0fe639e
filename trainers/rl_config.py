"""`RLConfig`: the knobs GRPOTrainer and PPOTrainer share (design/METHODS.md section 1).

Each field's docstring gives what it does and its paper default. `GRPOConfig` and `PPOConfig`
(grpo.py, ppo.py) add their own fields on top.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RLConfig", "check_finite_config"]


def _nonfinite(value: Any, path: str) -> list[tuple[str, float]]:
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(path, value)]
    if isinstance(value, dict):
        return [bad for k, v in value.items() for bad in _nonfinite(v, f"{path}[{k!r}]")]
    if isinstance(value, (list, tuple)):
        return [bad for i, v in enumerate(value) for bad in _nonfinite(v, f"{path}[{i}]")]
    return []


def check_finite_config(cfg: Any) -> None:
    """Raise ValueError naming every field of the dataclass `cfg` that holds NaN or inf (also inside
    dicts, lists and tuples, e.g. `estimator_cfg`): a non-finite knob would silently poison training."""
    bad = [b for f in dataclasses.fields(cfg) for b in _nonfinite(getattr(cfg, f.name), f.name)]
    if bad:
        shown = ", ".join(f"{path}={value!r}" for path, value in bad)
        raise ValueError(f"{type(cfg).__name__}: non-finite value(s) {shown}; give every number a finite value")


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
    """Truncated importance sampling cap between generator and trainer (2.0 when on; None = off)."""
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
