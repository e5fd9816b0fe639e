"""The policy-gradient update on one round's batch (design/METHODS.md 1.1-1.9).

`L = L_pg + kl_coef * L_KL - entropy_coef * L_H`, epochs x mini-batches optimizer steps, each one
accumulated over micro-batches of at most `token_budget` padded tokens. Normalisers are computed per
mini-batch and passed to every micro-batch, so the accumulated gradient equals the one-batch gradient.

Rows whose advantages are zero on every trainable token (all-equal GRPO groups, often most of a
batch) contribute exactly zero policy gradient: every clipped-surrogate variant is proportional to
the advantage. Unless a KL or entropy term is in the loss, they are left out of the forward and
backward passes (`skip_zero_adv_rows`), while the normalisers still count them, so the gradient is
unchanged and the update costs what the informative rows cost (the old logprobs of the ratio and of
TIS are recomputed on those rows only).

The passes run on the batch's row-token layout (`CreditBatch.ids_RT`: one row per episode for the
`full` history, identical to `ids_BT`; one row per turn for a per-turn history); every `[B, T]` input
(mask, token advantages, reference logprobs, clip scales) is mapped onto rows by index, so a
"sequence" of the seq-mean aggregations is a row.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from creditgym.batch import CreditBatch
from creditgym.credit import Advantages
from creditgym.trainers import flowrl, losses
from creditgym.trainers.logprobs import first_loss_position, forward_logprobs, micro_batches, row_lengths
from creditgym.trainers.schedule import Learner, optimizer_step

if TYPE_CHECKING:
    from creditgym.trainers.grpo import RLConfig

__all__ = ["policy_update"]

log = logging.getLogger(__name__)


def policy_update(
    learner: Learner,
    batch: CreditBatch,
    adv: Advantages,
    mask_BT: torch.Tensor,
    ref_BT: torch.Tensor | None,
    cfg: RLConfig,
    *,
    step: int,
    norm_const: float | None,
    flow: flowrl.FlowObjective | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Run `ppo_epochs x mini_batches` optimizer steps of `learner` on one role's packed `batch`, its
    advantages, the trainable-token mask and (when KL is on) reference logprobs, all on the episode
    layout `[B, T]`, under `cfg` (`step` seeds the mini-batch shuffle; `norm_const` is Dr. GRPO's
    constant). Returns token-weighted metrics and the reasons of the optimizer steps it skipped (no
    trainable token, NaN/inf loss or gradient norm), whose gradients it has cleared; the caller
    counts them. With `flow` (a role's logZ head and knobs) the loss is FlowRL's flow balance
    (flowrl.py) on the same epochs, mini-batches and micro-batches."""
    policy = learner.policy
    # R rows (the sequences the policy saw), T row tokens
    ids_RT, attn_RT = batch.row_inputs()
    mask_RT = batch.to_rows(mask_BT.bool(), False)
    adv_RT = batch.to_rows(adv.token_BT.to(torch.float32))
    ref_RT = batch.to_rows(ref_BT) if ref_BT is not None else None
    R = int(ids_RT.shape[0])
    if flow is not None:  # FlowRL: each row's episode reward and prompt
        if R != batch.B or (batch.row_turn_R is not None and bool((batch.row_turn_R >= 0).any())):
            raise ValueError("objective='flowrl' scores whole episodes, but this batch has one row per turn (a per-turn "
                             "history such as Device's window): collect with history='full'")  # fmt: skip
        rhat_R = flowrl.episode_mean(adv_RT, mask_RT)
        prompt_RT = flowrl.prompt_mask(batch.to_rows(batch.token_turn_BT, -1), attn_RT)
    learner.model.eval()  # dropout off: recomputed and training logprobs must agree (ratio 1 at start)
    kl_in_loss = ref_RT is not None and not cfg.kl_in_reward
    informative_R = ((adv_RT != 0) & mask_RT).any(dim=1).tolist()
    skip_zero = cfg.skip_zero_adv_rows and not kl_in_loss and cfg.entropy_coef == 0 and flow is None
    # the rows the passes below read: a skipped row's loss terms are zero, so it needs no old logprobs
    # (nor TIS weights: the TIS metrics cover the rows that train)
    read_R = informative_R if skip_zero else [True] * R
    read_mask_RT = mask_RT & torch.tensor(read_R, dtype=torch.bool)[:, None]
    on_policy = cfg.ppo_epochs == 1 and cfg.mini_batches == 1 and cfg.tis_cap is None
    old_RT = None
    if not on_policy:
        old_RT = torch.zeros(ids_RT.shape, dtype=torch.float32)
        rows_read = [i for i in range(R) if read_R[i]]
        if rows_read:
            old_RT[rows_read] = policy.logprobs(ids_RT[rows_read], attn_RT[rows_read], cfg.temperature,
                                                mask_BT=mask_RT[rows_read]).cpu().to(torch.float32)  # fmt: skip
    metrics: dict[str, float] = {}
    skips: list[str] = []
    tis_RT = None
    if cfg.tis_cap is not None:
        if batch.logprobs_BT is None:
            raise ValueError("tis_cap is set but the batch has no sampling logprobs (Turn.action_logprobs)")
        assert old_RT is not None
        gen_RT = batch.to_rows(batch.logprobs_BT)
        tis_RT, tis_m = losses.tis_weights(old_RT, gen_RT, read_mask_RT, cfg.tis_cap, cfg.tis_level)
        metrics.update(tis_m)
    eps_scale_RT = None
    if cfg.per_turn_clip:
        assert adv.clip_scale_BK is not None
        eps_scale_RT = batch.to_rows(losses.per_turn_eps_scale(adv.clip_scale_BK, batch.token_turn_BT), 1.0)
    eps_low = cfg.clip_eps_low if cfg.clip_eps_low is not None else cfg.clip_eps
    eps_high = cfg.clip_eps_high if cfg.clip_eps_high is not None else cfg.clip_eps
    lengths = row_lengths(attn_RT)
    if skip_zero:
        metrics["update/zero_adv_rows_frac"] = 1.0 - sum(informative_R) / max(R, 1)
    rng = np.random.default_rng([cfg.seed, step, 17])
    sums: dict[str, float] = {}
    n_tok = 0.0
    n_steps = 0
    for _epoch in range(cfg.ppo_epochs):
        order = rng.permutation(R) if cfg.mini_batches > 1 else np.arange(R)
        for chunk in np.array_split(order, cfg.mini_batches):
            rows_mb = sorted(int(i) for i in chunk)
            denom = losses.aggregation_denom(mask_RT[rows_mb], cfg.loss_agg)
            flow_denom = losses.aggregation_denom(mask_RT[rows_mb], "seq-mean-token-sum")  # FlowRL's |B+|
            if denom <= 0:
                skips.append("mini-batch has no trainable token")
                learner.optimizer.zero_grad(set_to_none=True)
                continue
            rows_fw = [i for i in rows_mb if informative_R[i]] if skip_zero else rows_mb
            if not rows_fw:
                # nothing informative: the full pass's gradient is exactly zero, so step the optimizer on
                # zero gradients (Adam's moments still move the weights, as they would after that pass)
                for p in learner.model.parameters():
                    if p.requires_grad:
                        p.grad = torch.zeros_like(p)
            for micro in micro_batches([lengths[i] for i in rows_fw], cfg.token_budget):
                rows = [rows_fw[j] for j in micro]
                T = max(lengths[i] for i in rows)
                m = mask_RT[rows, :T]
                H = None
                if flow is not None:  # one pass gives logp and the hidden states logZ reads
                    logp, logz = flowrl.flowrl_forward(policy, flow.head, ids_RT[rows, :T], attn_RT[rows, :T], m,
                                                       prompt_RT[rows, :T], cfg.temperature)  # fmt: skip
                else:
                    logp, H = forward_logprobs(policy, ids_RT[rows, :T], attn_RT[rows, :T], cfg.temperature,
                                               cfg.entropy_coef > 0, start=first_loss_position(m), mask_BT=m)  # fmt: skip
                dev = logp.device
                m = m.to(dev)
                old = old_RT[rows, :T].to(dev) if old_RT is not None else logp.detach()
                if flow is not None:
                    assert ref_RT is not None, "FlowRL needs reference logprobs"
                    tis_R = flowrl.episode_mean(tis_RT[rows, :T].to(dev), m) if tis_RT is not None else None
                    pg, pm = flowrl.flowrl_loss(
                        logz, logp, old, ref_RT[rows, :T].to(dev), rhat_R[rows].to(dev), m,
                        beta=flow.beta, is_eps=flow.is_eps, is_clip=flow.is_clip,
                        weight_B=tis_R, denom=flow_denom,
                    )  # fmt: skip
                else:
                    pg, pm = losses.policy_loss(
                        logp, old, adv_RT[rows, :T].to(dev), m,
                        eps_low=eps_low, eps_high=eps_high, dual_clip_c=cfg.dual_clip_c,
                        eps_scale_BT=eps_scale_RT[rows, :T].to(dev) if eps_scale_RT is not None else None,
                        is_weight_BT=tis_RT[rows, :T].to(dev) if tis_RT is not None else None,
                        agg=cfg.loss_agg, norm_const=norm_const, denom=denom,
                    )  # fmt: skip
                loss = pg
                part = {"pg_loss": float(pg.detach()), **pm}
                if ref_RT is not None:
                    k_RT = losses.kl_terms(logp, ref_RT[rows, :T].to(dev), cfg.kl_estimator)
                    kl = losses.aggregate(k_RT, m, cfg.loss_agg, norm_const, denom)
                    if not cfg.kl_in_reward:
                        loss = loss + cfg.kl_coef * kl
                    part["kl_ref"] = float((k_RT.detach() * m).sum()) / max(float(m.sum()), 1.0)
                if H is not None:
                    ent = losses.aggregate(H, m, cfg.loss_agg, norm_const, denom)
                    loss = loss - cfg.entropy_coef * ent
                    part["entropy"] = float((H.detach() * m).sum()) / max(float(m.sum()), 1.0)
                if losses.has_nonfinite(loss):
                    learner.optimizer.zero_grad(set_to_none=True)
                    return metrics, [*skips, "NaN or inf in the loss"]
                loss.backward()
                w = float(m.sum())
                n_tok += w
                for k, v in part.items():
                    # losses are already normalised by the mini-batch: sum them; ratios are token-weighted
                    sums[k] = sums.get(k, 0.0) + (v if k == "pg_loss" else v * w)
            norm = optimizer_step(learner.optimizer, learner.scheduler, cfg.max_grad_norm)
            if norm != norm:  # NaN: nothing stepped
                skips.append("non-finite gradient norm")
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + norm
            n_steps += 1
    for k, v in sums.items():
        metrics[k] = v / max(n_steps, 1) if k in ("pg_loss", "grad_norm") else v / max(n_tok, 1.0)
    metrics["tokens"] = float(mask_RT.sum())
    metrics["lr"] = float(learner.scheduler.get_last_lr()[0]) if learner.scheduler is not None else cfg.lr
    return metrics, skips
