"""PPOTrainer: clipped policy gradient with a learned critic and GAE at token or turn level.

PPO (Schulman et al., arXiv 1707.06347) with GAE (arXiv 1506.02438) as CleanRL's `ppo.py` and verl
do it: the critic values the state before each action token (token level) or before each turn
(turn level, plus the bootstrap slot after a truncated episode), `credit.compute("gae", ...)` turns
values into advantages and value targets, and the clipped value loss (METHODS.md 1.6) trains the
critic. The critic is a separate copy of the policy's network with a scalar head
(`critic="separate"`) or a head on the policy's own network (`critic="value_head"`).

    trainer = PPOTrainer(policy, "creditgym/Tools-v0", PPOConfig(estimator_cfg={"level": "turn"}))
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from creditgym.batch import CreditBatch
from creditgym.trainers import losses
from creditgym.trainers.common import build_optimizer, has_nonfinite, micro_batches, row_lengths
from creditgym.trainers.rl_base import RLTrainerBase
from creditgym.trainers.rl_config import RLConfig

__all__ = ["PPOConfig", "PPOTrainer", "ValueModel", "turn_values_from_tokens"]


@dataclass
class PPOConfig(RLConfig):
    """RLConfig plus the critic. Defaults follow CleanRL's ppo.py (vf_coef 0.5, vf_clip 0.2)."""

    estimator: str = "gae"
    """A critic-based estimator (needs={"values": "critic"}); gae by default."""
    estimator_cfg: dict[str, Any] = field(default_factory=lambda: {"level": "token", "gamma": 1.0, "lam": 0.95})
    """GAE knobs: level "token" | "turn" | "hierarchical", gamma, lam (verl: gamma 1.0, lam 1.0 for LLMs)."""
    critic: str = "separate"
    """"separate" (a copy of the policy network with a value head) or "value_head" (shares the policy's network)."""
    critic_lr: float | None = None
    """Critic learning rate (default: lr)."""
    vf_coef: float = 0.5
    """Value-loss weight (CleanRL 0.5)."""
    vf_clip: float | None = 0.2
    """Value clipping range (CleanRL 0.2, verl 0.5; None = off)."""


class ValueModel(torch.nn.Module):
    """A causal LM backbone with a scalar head on its last hidden state."""

    def __init__(self, backbone: torch.nn.Module, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor) -> torch.Tensor:
        """`v_BT[b, t]`: the value of the state before token t (read at position t - 1); v[:, 0] = value at 0."""
        pos_BT = (attention_mask_BT.long().cumsum(-1) - 1).clamp(min=0)
        out = self.backbone(input_ids=ids_BT, attention_mask=attention_mask_BT, position_ids=pos_BT, output_hidden_states=True)
        h_BTH = out.hidden_states[-1]
        v_BT = self.head(h_BTH).squeeze(-1).float()
        return torch.cat([v_BT[:, :1], v_BT[:, :-1]], dim=1)


def turn_values_from_tokens(
    v_BT: torch.Tensor, token_turn_BT: torch.Tensor, turn_mask_BK: torch.Tensor, truncated_B: torch.Tensor,
    end_values_B: torch.Tensor,
) -> torch.Tensor:
    """`values_BK[b, k]` = the token value at turn k's first action token; the slot after a
    truncated episode's last turn holds `end_values_B` (the value after the final observation)."""
    B, K = turn_mask_BK.shape
    T = token_turn_BT.shape[1]
    pos_BT = torch.arange(T).expand(B, T)
    first_BK = torch.full((B, K), T, dtype=torch.long)
    idx = token_turn_BT.clamp_min(0)
    cand = torch.where(token_turn_BT >= 0, pos_BT, torch.full_like(pos_BT, T))
    first_BK = first_BK.scatter_reduce(1, idx, cand, "amin")
    vals = torch.gather(torch.cat([v_BT, torch.zeros(B, 1, dtype=v_BT.dtype)], 1), 1, first_BK.clamp(max=T))
    vals = torch.where(turn_mask_BK, vals, torch.zeros_like(vals))
    n_B = turn_mask_BK.sum(1)
    boot = truncated_B & (n_B < K)
    if bool(boot.any()):
        rows = boot.nonzero().squeeze(-1)
        vals[rows, n_B[rows]] = end_values_B[rows].to(vals.dtype)
    return vals


class PPOTrainer(RLTrainerBase):
    """On-policy PPO with a critic; everything else (collection, losses, logging, resume) as GRPO."""

    description = "ppo"

    def __init__(self, policy: Any = None, env_id: str | None = None, config: PPOConfig | None = None, **kw: Any):
        cfg = config if config is not None else PPOConfig()
        if cfg.critic not in ("separate", "value_head"):
            raise ValueError(f"critic must be 'separate' or 'value_head', got {cfg.critic!r}")
        super().__init__(policy, env_id, cfg, **kw)
        needs = self.needs
        if needs.get("values") != "critic":
            raise ValueError(f"PPOTrainer trains a critic for estimator values; {cfg.estimator!r} needs none: use GRPOTrainer")
        self.critics: dict[str, ValueModel] = {}
        self.critic_opts: dict[str, Any] = {}
        for role, p in self.policies.items():
            base = p.model.get_base_model() if hasattr(p.model, "get_base_model") else p.model
            backbone = copy.deepcopy(base) if cfg.critic == "separate" else base
            if cfg.critic == "separate":
                for prm in backbone.parameters():
                    prm.requires_grad_(True)
            vm = ValueModel(backbone, int(base.config.hidden_size)).to(next(base.parameters()).device)
            self.critics[role] = vm
            self.critic_opts[role] = build_optimizer(vm, cfg.critic_lr or cfg.lr, cfg.weight_decay, cfg.warmup_steps)
        pending = getattr(self, "_pending_critic_state", None)
        if pending:
            self._load_extra_state({**self._extra_state_base(), "critics": pending})

    def _extra_state_base(self) -> dict[str, Any]:
        return super()._extra_state()

    @property
    def _level(self) -> str:
        return str(self.config.estimator_cfg.get("level", "token"))

    def _extra_state(self) -> dict[str, Any]:
        state = super()._extra_state()
        state["critics"] = {
            r: {"model": {k: v.detach().cpu() for k, v in vm.state_dict().items()},
                "opt": self.critic_opts[r][0].state_dict(), "sched": self.critic_opts[r][1].state_dict()}
            for r, vm in self.critics.items()
        }  # fmt: skip
        return state

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        super()._load_extra_state(state)
        if not hasattr(self, "critics"):
            self._pending_critic_state = state.get("critics")
            return
        for r, s in (state.get("critics") or {}).items():
            self.critics[r].load_state_dict(s["model"])
            self.critic_opts[r][0].load_state_dict(s["opt"])
            self.critic_opts[r][1].load_state_dict(s["sched"])

    def _critic_values(self, role: str, batch: CreditBatch) -> torch.Tensor:
        assert batch.ids_BT is not None and batch.attention_mask_BT is not None
        vm = self.critics[role]
        lengths = row_lengths(batch.attention_mask_BT)
        out = torch.zeros(batch.ids_BT.shape, dtype=torch.float32)
        with torch.no_grad():
            vm.eval()
            for rows in micro_batches(lengths, self.config.token_budget):
                T = max(lengths[i] for i in rows)
                out[rows, :T] = vm(batch.ids_BT[rows, :T], batch.attention_mask_BT[rows, :T]).cpu()
        return out

    def _values_for(self, role: str, batch: CreditBatch) -> CreditBatch:
        v_BT = self._critic_values(role, batch)
        assert batch.attention_mask_BT is not None
        lengths = torch.tensor(row_lengths(batch.attention_mask_BT))
        # value after the final observation: the hidden state at the last real token
        end_B = self._end_values(role, batch, lengths)
        values_BK = turn_values_from_tokens(v_BT, batch.token_turn_BT, batch.turn_mask_BK, batch.truncated_B, end_B)
        self._old_values = (v_BT, values_BK)
        return batch.with_values(values_BK=values_BK, token_values_BT=v_BT)

    def _end_values(self, role: str, batch: CreditBatch, lengths: torch.Tensor) -> torch.Tensor:
        assert batch.ids_BT is not None and batch.attention_mask_BT is not None
        B, T = batch.ids_BT.shape
        ids = torch.cat([batch.ids_BT, torch.zeros(B, 1, dtype=batch.ids_BT.dtype)], 1)
        attn = torch.cat([batch.attention_mask_BT, torch.zeros(B, 1, dtype=batch.attention_mask_BT.dtype)], 1)
        rows = torch.arange(B)
        attn[rows, lengths] = 1  # a dummy next token: its value slot reads the state after the last real token
        v = self._critic_values(role, dataclasses.replace(batch, ids_BT=ids, attention_mask_BT=attn))
        return v[rows, lengths]

    def _after_update(self, role: str, batch: CreditBatch, adv: Any) -> dict[str, float]:
        """Clipped value regression on the estimator's returns (METHODS.md 1.6)."""
        cfg = self.config
        assert batch.ids_BT is not None and batch.attention_mask_BT is not None
        vm = self.critics[role]
        opt, sched = self.critic_opts[role]
        old_v_BT, old_v_BK = self._old_values
        turn_level = self._level == "turn"
        if turn_level:
            returns, mask = adv.returns_BK, batch.turn_mask_BK
        else:
            returns, mask = adv.returns_BT, batch.loss_mask_BT
        if returns is None:
            raise ValueError(f"estimator {cfg.estimator!r} gives no returns_BT/returns_BK to train the critic on")
        lengths = row_lengths(batch.attention_mask_BT)
        vm.train()
        metrics: dict[str, float] = {}
        denom = float(mask.sum())
        if denom <= 0:
            return metrics
        for _ in range(cfg.ppo_epochs):
            total = 0.0
            for rows in micro_batches(lengths, cfg.token_budget):
                T = max(lengths[i] for i in rows)
                v_BT = vm(batch.ids_BT[rows, :T], batch.attention_mask_BT[rows, :T])
                if turn_level:
                    end = torch.zeros(len(rows))
                    v = turn_values_from_tokens(v_BT, batch.token_turn_BT[rows, :T], batch.turn_mask_BK[rows],
                                                torch.zeros(len(rows), dtype=torch.bool), end)  # fmt: skip
                    args = (v, old_v_BK[rows], returns[rows], mask[rows])
                else:
                    args = (v_BT, old_v_BT[rows, :T], returns[rows, :T], mask[rows, :T])
                vl, vmx = losses.value_loss(*args, vf_clip=cfg.vf_clip, agg="token-mean", denom=denom)
                loss = cfg.vf_coef * vl
                if has_nonfinite(loss):
                    opt.zero_grad(set_to_none=True)
                    return {"vf_skipped": 1.0}
                loss.backward()
                total += float(vl.detach())
                metrics.update(vmx)
            torch.nn.utils.clip_grad_norm_(vm.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            metrics["vf_loss"] = total
        return metrics
