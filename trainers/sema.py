"""SEMA on the harmless canary proxy: prefilling self-tuning, then GRPO on the intent-drift-aware reward.

SEMA ("Simple yet Effective Learning for Multi-Turn Jailbreak Attacks", arXiv 2602.06854; METHODS.md
section 8) trains an open-loop attacker: one action holds a numbered plan of user messages that the
env sends whatever the replies (`RedTeamEnv(mode="open_loop")`). Stage I samples `n_generations`
plans per training goal from the *current* attacker with the reply prefilled by `"1. "`
(`Collector(prefill=...)`), strips trailing "(Note: ...)" lines and fine-tunes on prompt -> plan
(prefill tokens included). Stage II is GRPO on `0.5 * format + 0.5 * IA * (CR + DL) / 2`
(`reward_scheme="ida"`). Here the goal is always the canary game: the library ships no harmful goals.

    trainer = SEMATrainer(policy, SEMAConfig(out_dir="runs/sema"))
    summary = trainer.train()      # stage I (SFTTrainer), then stage II (GRPOTrainer)

Each stage is an existing trainer that checkpoints and resumes on its own (`out_dir/stage1`,
`out_dir/stage2`); stage I's sampled plans are written to `out_dir/stage1/plans.jsonl` so a resumed
run trains on the same data.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from creditgym.agents.base import Policy, Sampling, TrainablePolicy
from creditgym.agents.rollout import Collector
from creditgym.envs.redteam import REDTEAM
from creditgym.store import RolloutStore
from creditgym.trainers.evaluate import evaluate
from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer
from creditgym.trainers.sft import SFTConfig, SFTTrainer
from creditgym.trajectory import Episode

__all__ = ["SEMAConfig", "SEMATrainer", "attack_success_by_level", "self_tune_examples", "strip_notes", "train_on_prefill"]

log = logging.getLogger(__name__)

OPEN_LOOP_KWARGS: dict[str, Any] = {"mode": "open_loop", "reward_scheme": "ida", "goal_types": ("canary",)}
"""The env settings SEMA trains and evaluates with (the canary proxy of METHODS.md section 8)."""

_NOTE = re.compile(r"^\s*\(\s*note\b.*$", re.IGNORECASE)


def strip_notes(text: str) -> str:
    """`text` without its trailing parenthesised "(Note: ...)" lines (and the blank lines around them)."""
    lines = text.rstrip().split("\n")
    while lines and (not lines[-1].strip() or _NOTE.match(lines[-1])):
        lines.pop()
    return "\n".join(lines)


def train_on_prefill(episodes: Sequence[Episode]) -> list[Episode]:
    """The episodes with their prefill tokens (`Turn.info["prefill_tokens"]`) in the loss: SFT on
    self-generated plans trains on prompt -> prefill + continuation (METHODS.md section 8)."""
    out = []
    for ep in episodes:
        turns = []
        for t in ep.turns:
            n = int(t.info.get("prefill_tokens", 0))
            mask = t.action_loss_mask or ()
            turns.append(dataclasses.replace(t, action_loss_mask=(1,) * n + tuple(mask[n:])) if n else t)
        out.append(dataclasses.replace(ep, turns=tuple(turns)))
    return out


def _cut_to_text(tokenizer: Any, ids: Sequence[int], text: str, keep: int) -> tuple[int, ...]:
    """The shortest prefix of `ids` (at least `keep` tokens) whose decoding covers `text`: cutting
    at a token boundary keeps the ids exactly the sampled ones."""
    for n in range(max(keep, 1), len(ids) + 1):
        if len(tokenizer.decode(list(ids[:n]))) >= len(text):
            return tuple(ids[:n])
    return tuple(ids)


def self_tune_examples(episodes: Sequence[Episode], tokenizer: Any, keep: str = "all") -> list[Episode]:
    """Stage I's SFT data from prefilled samples: trailing "(Note: ...)" lines cut off (at a token
    boundary, so the ids stay the sampled ones), prefill tokens trained; `keep="format"` keeps only
    plans with format 1 (our option; SEMA's release keeps every sample)."""
    if keep not in ("all", "format"):
        raise ValueError(f"keep must be 'all' or 'format', got {keep!r}")
    out = []
    for ep in train_on_prefill(episodes):
        if keep == "format" and ep.outcome.get("format", 0.0) < 1.0:
            continue
        t = ep.turns[0]
        text = strip_notes(t.action_text)
        if text != t.action_text:
            ids = _cut_to_text(tokenizer, t.action_ids, text, int(t.info.get("prefill_tokens", 0)))
            lp, mask = t.action_logprobs or (), t.action_loss_mask or ()
            t = dataclasses.replace(t, action_ids=ids, action_logprobs=lp[: len(ids)], action_loss_mask=mask[: len(ids)],
                                    action_text=text)  # fmt: skip
        out.append(dataclasses.replace(ep, turns=(t,)))  # one plan per episode: the open-loop action
    return out


def attack_success_by_level(
    policy: Policy, levels: Sequence[int] = (0, 1, 2, 3, 4), n_eval: int = 32, seed: int = 10_000,
    max_turns: int = 4, max_new_tokens: int = 96, temperature: float = 1.0, split: str = "test",
    env_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """Held-out attack success, mean reward and format rate against each scripted victim level."""
    kwargs = {**OPEN_LOOP_KWARGS, "max_turns": max_turns, **dict(env_kwargs or {})}
    res = evaluate(policy, REDTEAM, n_eval=n_eval, seed=seed, split=split, temperature=temperature,
                   max_new_tokens=max_new_tokens, env_kwargs=kwargs,
                   categories={f"L{lvl}": {"victim_level": lvl} for lvl in levels})  # fmt: skip
    out = {}
    for i, (name, m) in enumerate(res.by_category.items()):
        eps = res.episodes[i * n_eval : (i + 1) * n_eval]
        fmt = sum(e.outcome.get("format", 0.0) for e in eps) / max(len(eps), 1)
        out[name] = {"success": m["success"], "reward": m["reward"], "format": fmt}
    return out


@dataclass
class SEMAConfig:
    """Both SEMA stages. Paper defaults (release scripts) in the field docs; offline tiny defaults here."""

    train_levels: tuple[int, int] = (1, 2)
    """Scripted victim levels trained on (METHODS.md section 8: L1-L2; L3 is held out, L4 the control)."""
    max_turns: int = 4
    """Plan items at most (SEMA: 7); the expert's open-loop plan has 4."""
    prefill: str = "1. "
    """Stage I: the reply's prefill (SEMA's)."""
    n_generations: int = 8
    """Stage I: plans sampled per training goal (SEMA: 10)."""
    self_tune_goals: int = 16
    """Stage I: training goals (tasks) sampled."""
    self_tune_temperature: float = 1.0
    """Stage I sampling temperature (SEMA: 1.0)."""
    max_new_tokens: int = 96
    """Tokens per plan, both stages (SEMA: 500)."""
    self_tune_filter: str = "all"
    """"all" (SEMA's release keeps every sample) or "format" (only format-1 plans; ours)."""
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(lr=1e-3, epochs=1, batch_episodes=16, lr_schedule="cosine",
                                                             min_lr_ratio=0.1))  # fmt: skip
    """Stage I SFT (SEMA: 1 epoch, warm-up 3%, cosine to a min lr; lr 1e-5 for pretrained models)."""
    rl: GRPOConfig = field(default_factory=lambda: GRPOConfig(steps=10, num_groups=4, group_size=8, lr=1e-4))
    """Stage II GRPO (SEMA: group 28, lr 1e-5, 12 optimizer steps per generation batch (`mini_batches`),
    500 tokens); `env_kwargs` and `max_new_tokens` are set from this config."""
    self_tune: bool = True
    """Run stage I."""
    rl_stage: bool = True
    """Run stage II."""
    seed: int = 0
    """Seeds stage I's sampling, the SFT shuffle and stage II's run."""
    out_dir: str | None = None
    """Stage I in out_dir/stage1 (plans.jsonl, checkpoints), stage II in out_dir/stage2."""
    resume: bool = False
    """Resume each stage from its checkpoint (and stage I from its saved plans)."""

    def __post_init__(self) -> None:
        if self.self_tune_filter not in ("all", "format"):
            raise ValueError(f"self_tune_filter must be 'all' or 'format', got {self.self_tune_filter!r}")


class SEMATrainer:
    """Stage I (prefilling self-tuning, SFTTrainer) then stage II (GRPOTrainer on the IDA reward)."""

    def __init__(self, policy: TrainablePolicy, config: SEMAConfig | None = None, env_kwargs: Mapping[str, Any] | None = None):
        self.policy = policy
        self.config = config or SEMAConfig()
        cfg = self.config
        self.env_kwargs = {**OPEN_LOOP_KWARGS, "max_turns": cfg.max_turns, "victim_level": tuple(cfg.train_levels),
                           **dict(env_kwargs or {})}  # fmt: skip
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else None

    def _stage_dir(self, name: str) -> str | None:
        return str(self.out_dir / name) if self.out_dir else None

    def sample_plans(self) -> list[Episode]:
        """Stage I's samples: `n_generations` prefilled plans per training goal from the current policy."""
        cfg = self.config
        path = Path(self._stage_dir("stage1") or "") / "plans.jsonl" if self.out_dir else None
        if path is not None and cfg.resume and path.exists():
            return RolloutStore(path).read()
        col = Collector(self.policy, REDTEAM, group_size=cfg.n_generations, env_kwargs=self.env_kwargs, prefill=cfg.prefill,
                        sampling=Sampling(temperature=cfg.self_tune_temperature, max_new_tokens=cfg.max_new_tokens))  # fmt: skip
        try:
            eps = col.collect(cfg.self_tune_goals, seed=cfg.seed * 7919 + 1)
        finally:
            col.close()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            RolloutStore(path).extend(eps)
        return eps

    def self_tune(self) -> dict[str, float]:
        """Stage I: sample prefilled plans, SFT on them; returns the SFT summary and the samples' format rate."""
        cfg = self.config
        plans = self.sample_plans()
        data = self_tune_examples(plans, self.policy.tokenizer, cfg.self_tune_filter)
        fmt = sum(e.outcome.get("format", 0.0) for e in plans) / max(len(plans), 1)
        if not data:
            log.warning("SEMA stage I kept no plan (self_tune_filter=%r): nothing to fine-tune on", cfg.self_tune_filter)
            return {"self_tune/plans": float(len(plans)), "self_tune/kept": 0.0, "self_tune/format": fmt}
        sft = dataclasses.replace(cfg.sft, out_dir=self._stage_dir("stage1"), resume=cfg.resume, seed=cfg.seed)
        summary = SFTTrainer(self.policy, sft, episodes=data).train()
        return {**{f"self_tune/{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))},
                "self_tune/plans": float(len(plans)), "self_tune/kept": float(len(data)), "self_tune/format": fmt}

    def rl(self) -> dict[str, float]:
        """Stage II: GRPO on the intent-drift-aware reward (`reward_scheme="ida"`, open loop)."""
        cfg = self.config
        rl = dataclasses.replace(cfg.rl, env_kwargs={**cfg.rl.env_kwargs, **self.env_kwargs}, max_new_tokens=cfg.max_new_tokens,
                                 out_dir=self._stage_dir("stage2"), resume=cfg.resume, seed=cfg.seed)  # fmt: skip
        summary = GRPOTrainer(self.policy, REDTEAM, rl).train()
        return {f"rl/{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))}

    def train(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.config.self_tune:
            out.update(self.self_tune())
        if self.config.rl_stage:
            out.update(self.rl())
        return out
