"""PPOTrainer: clipped policy gradient with a learned critic and GAE at token or turn level.

PPO (Schulman et al., arXiv 1707.06347) with GAE (arXiv 1506.02438) as CleanRL's `ppo.py` and verl
do it: the critic values the state before each action token (token level) or before each turn
(turn level, plus the bootstrap slot after a truncated episode), `credit.compute("gae", ...)` turns
values into advantages and value targets, and the clipped value loss (METHODS.md 1.6) trains the
critic. PPOTrainer is GRPOTrainer's loop (grpo.py) plus, by composition, one `Critic` per role: the
value model, its optimizer and its fit. The value model is a separate copy of the policy's network
with a scalar head (`critic="separate"`) or a head on the policy's own network (`critic="value_head"`).

The critic reads, and is trained on, the batch's row-token layout (`batch.row_inputs()`): the
sequences the policy sampled from, one per episode with the `full` history, one per turn with a
per-turn history such as Device-v0's `window`. Its values map back to the episode layout with
`batch.from_rows`; a truncated episode's bootstrap value is read after the final observation's own
prompt in per-turn mode (after the whole episode in full mode).

    trainer = PPOTrainer(policy, "creditgym/Tools-v0", PPOConfig(estimator_cfg={"level": "turn"}))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from creditgym.agents.base import TrainablePolicy
from creditgym.batch import CreditBatch
from creditgym.credit import Advantages
from creditgym.trainers import losses
from creditgym.trainers.grpo import GRPOTrainer, RLConfig
from creditgym.trainers.logprobs import micro_batches, row_lengths
from creditgym.trainers.schedule import build_optimizer

__all__ = ["Critic", "PPOConfig", "PPOTrainer", "ValueModel", "turn_values_from_tokens"]


@dataclass
class PPOConfig(RLConfig):
    """RLConfig plus the critic. Defaults follow CleanRL's ppo.py (vf_coef 0.5, vf_clip 0.2)."""

    estimator: str = "gae"
    """A critic-based estimator (needs={"values": "critic"}); gae by default."""
    estimator_cfg: dict[str, Any] = field(default_factory=lambda: {"level": "token", "gamma": 1.0, "lam": 1.0})
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


class Critic:
    """One role's critic: the value model, its optimizer and its fit (clipped value regression on the
    estimator's returns, METHODS.md 1.6). It reads, and is trained on, the batch's row-token layout."""

    def __init__(self, policy: TrainablePolicy, cfg: RLConfig):
        if not isinstance(cfg, PPOConfig):
            raise TypeError(f"a Critic reads PPOConfig's critic fields; got a {type(cfg).__name__}: use PPOConfig")
        if cfg.critic not in ("separate", "value_head"):
            raise ValueError(f"critic must be 'separate' or 'value_head', got {cfg.critic!r}")
        self.cfg = cfg
        self.level = str(cfg.estimator_cfg.get("level", "token"))
        base = policy.base_model()
        backbone = copy.deepcopy(base) if cfg.critic == "separate" else base
        if cfg.critic == "separate":
            for prm in backbone.parameters():
                prm.requires_grad_(True)
        self.model = ValueModel(backbone, int(base.config.hidden_size)).to(next(base.parameters()).device)
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg.critic_lr or cfg.lr, cfg.weight_decay, cfg.warmup_steps)

    def state_dict(self) -> dict[str, Any]:
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "opt": self.optimizer.state_dict(), "sched": self.scheduler.state_dict()}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["opt"])
        self.scheduler.load_state_dict(state["sched"])

    def values(self, ids_RT: torch.Tensor, attention_mask_RT: torch.Tensor) -> torch.Tensor:
        """No-grad values `v_RT` of right-padded rows, micro-batched by `token_budget` (on CPU)."""
        vm = self.model
        dev = next(vm.parameters()).device
        lengths = row_lengths(attention_mask_RT)
        out = torch.zeros(ids_RT.shape, dtype=torch.float32)
        with torch.no_grad():
            vm.eval()
            for rows in micro_batches(lengths, self.cfg.token_budget):
                T = max(lengths[i] for i in rows)
                out[rows, :T] = vm(ids_RT[rows, :T].to(dev), attention_mask_RT[rows, :T].to(dev)).cpu()
        return out

    def attach_values(self, batch: CreditBatch) -> CreditBatch:
        """`batch` with values on the row layout (what the policy saw: one row per episode in `full`
        mode, one per turn in `window` mode), mapped back to the episode layout with `batch.from_rows`;
        `fit` reads them back as the old values of the clipped value loss."""
        ids_RT, attn_RT = batch.row_inputs()
        v_BT = batch.from_rows(self.values(ids_RT, attn_RT))
        end_B = self.end_values(batch)
        values_BK = turn_values_from_tokens(v_BT, batch.token_turn_BT, batch.turn_mask_BK, batch.truncated_B, end_B)
        return batch.with_values(values_BK=values_BK, token_values_BT=v_BT)

    def end_values(self, batch: CreditBatch) -> torch.Tensor:
        """`end_B[b]`: the value of the state after episode b's final observation.

        It is read at a dummy token appended to the sequence the next action would be sampled from:
        the whole episode when it is one row (`full`), else the final observation's own prompt (in
        `window` mode `Episode.final_obs_ids` is the next turn's whole window prompt, packed after the
        last turn's row); an episode with no final observation uses its last turn's row."""
        ids_BT, attn_BT = batch.ids_BT, batch.attention_mask_BT
        if ids_BT is None or attn_BT is None:
            raise ValueError("PPOTrainer needs token ids (ids_BT); pack the episodes with CreditBatch.from_episodes")
        lengths_B = torch.tensor(row_lengths(attn_BT), dtype=torch.long)
        start_B = _end_row_starts(batch, lengths_B)
        n_B = lengths_B - start_B
        B, W = batch.B, int(n_B.max()) + 1
        col_BW = start_B[:, None] + torch.arange(W)[None, :]
        real_BW = torch.arange(W)[None, :] < n_B[:, None]
        ids = torch.where(real_BW, ids_BT.gather(1, col_BW.clamp(max=batch.T - 1)), torch.zeros((), dtype=ids_BT.dtype))
        attn = real_BW.to(attn_BT.dtype)
        rows = torch.arange(B)
        attn[rows, n_B] = 1  # a dummy next token: its value slot reads the state after the last real token
        return self.values(ids, attn)[rows, n_B]

    def fit(self, batch: CreditBatch, adv: Advantages) -> dict[str, float]:
        """Clipped value regression of the values `attach_values` put on `batch` towards the
        estimator's returns (`ppo_epochs` optimizer steps, micro-batched), on the row layout."""
        cfg = self.cfg
        vm, opt, sched = self.model, self.optimizer, self.scheduler
        old_v_BT, old_v_BK = batch.token_values_BT, batch.values_BK
        assert old_v_BT is not None and old_v_BK is not None, "fit() reads the values attach_values() put on the batch"
        turn_level = self.level == "turn"
        returns = adv.returns_BK if turn_level else adv.returns_BT
        if returns is None:
            raise ValueError(f"estimator {cfg.estimator!r} gives no returns_BT/returns_BK to train the critic on")
        ids_RT, attn_RT = batch.row_inputs()
        ep_R = batch.row_episode_R if batch.row_episode_R is not None else torch.arange(batch.B)
        if turn_level:
            row_mask_RK = _row_turn_mask(batch, ep_R)
            denom = float(batch.turn_mask_BK.sum())
        else:
            mask_RT = batch.to_rows(batch.loss_mask_BT, False)
            old_RT, returns_RT = batch.to_rows(old_v_BT), batch.to_rows(returns)
            denom = float(batch.loss_mask_BT.sum())
        lengths = row_lengths(attn_RT)
        vm.train()
        metrics: dict[str, float] = {}
        if denom <= 0:
            return metrics
        dev = next(vm.parameters()).device
        for _ in range(cfg.ppo_epochs):
            total = 0.0
            for rows in micro_batches(lengths, cfg.token_budget):
                T = max(lengths[i] for i in rows)
                v_RT = vm(ids_RT[rows, :T].to(dev), attn_RT[rows, :T].to(dev))
                if turn_level:
                    eps = ep_R[rows]
                    m_RK = row_mask_RK[rows]
                    tt_RT = batch.token_turn_RT if batch.token_turn_RT is not None else batch.token_turn_BT
                    v = turn_values_from_tokens(v_RT.cpu(), tt_RT[rows, :T], m_RK,
                                                torch.zeros(len(rows), dtype=torch.bool), torch.zeros(len(rows)))  # fmt: skip
                    args = (v, old_v_BK[eps], returns[eps], m_RK)
                else:
                    args = (v_RT.cpu(), old_RT[rows, :T], returns_RT[rows, :T], mask_RT[rows, :T])
                vl, vmx = losses.value_loss(*args, vf_clip=cfg.vf_clip, agg="token-mean", denom=denom)
                loss = cfg.vf_coef * vl
                if losses.has_nonfinite(loss):
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


class PPOTrainer(GRPOTrainer):
    """On-policy PPO: GRPOTrainer's loop (collection, losses, logging, resume) with a `Critic` per role
    that values each batch before credit and is fitted after the policy update."""

    description = "ppo"
    critic_cls = Critic

    def __init__(self, policy: Any = None, env_id: str | None = None, config: PPOConfig | None = None, **kw: Any):
        super().__init__(policy, env_id, config if config is not None else PPOConfig(), **kw)


def _end_row_starts(batch: CreditBatch, lengths_B: torch.Tensor) -> torch.Tensor:
    """Per episode, where the sequence valued after its final observation starts in `ids_BT`: 0 for an
    episode that is one row; else the end of its last turn row (the final observation's prompt), or
    that row's start when the episode has no final observation."""
    start_B = torch.zeros(batch.B, dtype=torch.long)
    if batch.row_episode_R is None or batch.row_turn_R is None or batch.row_start_R is None:
        return start_B
    assert batch.attention_mask_RT is not None
    turn_rows = (batch.row_turn_R >= 0).nonzero().squeeze(-1).tolist()
    ends_R = batch.row_start_R + batch.attention_mask_RT.sum(1)
    for r in turn_rows:  # rows are sorted by (episode, turn): the last one of an episode wins
        b, end = int(batch.row_episode_R[r]), int(ends_R[r])
        start_B[b] = end if end < int(lengths_B[b]) else int(batch.row_start_R[r])
    return start_B


def _row_turn_mask(batch: CreditBatch, ep_R: torch.Tensor) -> torch.Tensor:
    """`[R, K]`: the turns whose value row r holds (every turn of its episode for a whole-episode row,
    the row's own turn for a turn row)."""
    mask_RK = batch.turn_mask_BK[ep_R]
    if batch.row_turn_R is None:
        return mask_RK
    turn_R = batch.row_turn_R
    own_RK = torch.arange(batch.K)[None, :] == turn_R[:, None]
    return torch.where((turn_R >= 0)[:, None], mask_RK & own_RK, mask_RK)
