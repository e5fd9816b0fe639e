"""GRPOTrainer: critic-free policy optimisation with any registered credit estimator.

GRPO (DeepSeekMath, arXiv 2402.03300) samples a group of episodes per task and uses group-relative
advantages; here the advantage comes from any estimator in `creditgym.credit.ESTIMATORS` (grpo,
rloo, gigpo, turn_return, igpo, ... or your own `@register_estimator`), and the loss from
METHODS.md section 1 (PPO/DAPO clipping, Dr. GRPO aggregation, KL, entropy, TIS).

    trainer = GRPOTrainer(policy, "creditgym/SearchEasy-v0", GRPOConfig(estimator="gigpo", steps=20))
    summary = trainer.train()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from creditgym.trainers.rl_base import RLTrainerBase
from creditgym.trainers.rl_config import RLConfig

__all__ = ["GRPOConfig", "GRPOTrainer"]


@dataclass
class GRPOConfig(RLConfig):
    """Every knob of RLConfig (collection, clipping, aggregation, KL, entropy, DAPO, LoRA, run
    bookkeeping), with GRPO's defaults: estimator "grpo", one epoch (strictly on-policy)."""

    objective: str = "pg"
    """"pg" (clipped policy gradient). FlowRL's objective comes with a later issue."""


class GRPOTrainer(RLTrainerBase):
    """Critic-free trainer. Refuses estimators that need critic values (use PPOTrainer)."""

    description = "grpo"

    def __init__(self, policy: Any = None, env_id: str | None = None, config: GRPOConfig | None = None, **kw: Any):
        cfg = config if config is not None else GRPOConfig()
        if cfg.objective != "pg":
            raise ValueError(f"objective {cfg.objective!r} is not available yet; use objective='pg'")
        needs = dict(getattr(self._estimator(cfg.estimator), "needs", {}) or {})
        needs.update(cfg.collect_overrides)
        if needs.get("values") == "critic":
            raise ValueError(
                f"estimator {cfg.estimator!r} needs critic values; GRPOTrainer is critic-free: use PPOTrainer"
            )
        if needs.get("values") == "mc" and not needs.get("branches"):
            raise ValueError(
                f"estimator {cfg.estimator!r} needs Monte-Carlo values from branches; set "
                "collect_overrides={'branches': {'at': 'every_turn', 'n': 4}}"
            )
        super().__init__(policy, env_id, cfg, **kw)
