"""Policy, KL, entropy and value losses as pure functions over tensors (design/METHODS.md section 1).

Shape suffixes: B episodes, T token slots, K turn slots, V vocabulary. Every loss is *minimised*.
Masks are bool or 0/1 tensors; `mask_BT` is the packed `loss_mask_BT` (1 on trainable action tokens).

Aggregation (section 1.3) is shared by every term. For micro-batching, the normaliser of a
mini-batch (its token count, or its number of episodes with a trainable token) is computed once with
`aggregation_denom` and passed to each micro-batch as `denom=`, so micro-batch losses *sum* to the
full-batch loss and gradient accumulation equals one big batch.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = [
    "AGG_MODES",
    "aggregate",
    "aggregation_denom",
    "entropy_from_logits",
    "has_nonfinite",
    "keep_informative_groups",
    "kl_reward_penalty",
    "kl_terms",
    "overlong_penalty",
    "per_turn_eps_scale",
    "policy_loss",
    "ratio_from_logprobs",
    "sft_loss",
    "tis_weights",
    "value_loss",
]

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
AGG_MODES: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
_LOG_RATIO_CLAMP = 20.0


def has_nonfinite(*tensors: torch.Tensor | None) -> bool:
    """True if any given tensor holds a NaN or an inf (such a loss or advantage skips the update)."""
    return any(t is not None and not bool(torch.isfinite(t).all()) for t in tensors)


def _check_agg(agg: str) -> None:
    if agg not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation {agg!r}; choose one of {AGG_MODES}")


def ratio_from_logprobs(logp_BT: torch.Tensor, old_BT: torch.Tensor) -> torch.Tensor:
    """`exp(clamp(logp - old, -20, 20))`: the importance ratio with verl's overflow guard."""
    return torch.exp(torch.clamp(logp_BT - old_BT, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))


def aggregation_denom(mask_BT: torch.Tensor, agg: str = "token-mean") -> float:
    """The normaliser of a (mini-)batch for `agg`: its trainable-token count for `token-mean`, else
    |B+| (episodes with at least one trainable token). Pass it to every micro-batch as `denom=`."""
    _check_agg(agg)
    m = mask_BT.to(torch.float32)
    if agg == "token-mean":
        return float(m.sum())
    return float((m.sum(-1) > 0).sum())


def aggregate(
    l_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    agg: str = "token-mean",
    norm_const: float | None = None,
    denom: float | None = None,
) -> torch.Tensor:
    """Reduce per-token losses to a scalar (METHODS.md 1.3; DAPO arXiv 2503.14476, Dr. GRPO
    arXiv 2503.20783).

    token-mean: sum M*l / sum M; seq-mean-token-mean: mean over B+ of (sum_t M*l / sum_t M);
    seq-mean-token-sum: mean over B+ of sum_t M*l; seq-mean-token-sum-norm: the same divided by the
    constant `norm_const` (the episode's action-token budget). `denom` overrides the count (token
    count or |B+|) with the full mini-batch's, for micro-batching. An empty mask gives 0.
    """
    _check_agg(agg)
    m = mask_BT.to(l_BT.dtype)
    lm = l_BT * m
    if denom is None:
        denom = aggregation_denom(mask_BT, agg)
    if denom <= 0:
        return lm.sum() * 0.0
    if agg == "token-mean":
        return lm.sum() / denom
    if agg == "seq-mean-token-mean":
        per_seq = lm.sum(-1) / m.sum(-1).clamp_min(1.0)
        return per_seq.sum() / denom
    total = lm.sum() / denom
    if agg == "seq-mean-token-sum-norm":
        if norm_const is None or norm_const <= 0:
            raise ValueError(
                "loss_agg='seq-mean-token-sum-norm' needs loss_norm_const > 0 (Dr. GRPO: the episode's "
                "action-token budget, max_turns * max_new_tokens)"
            )
        total = total / norm_const
    return total


def per_turn_eps_scale(clip_scale_BK: torch.Tensor, token_turn_BT: torch.Tensor) -> torch.Tensor:
    """Gather A2TGPO's per-turn clip scale onto tokens (1 off-action) (arXiv 2605.06200; METHODS 1.2)."""
    if bool((clip_scale_BK <= 0).any()):
        raise ValueError("clip_scale_BK must be > 0 everywhere (scales the clip range of each turn)")
    idx_BT = token_turn_BT.clamp_min(0)
    s_BT = torch.gather(clip_scale_BK.to(torch.float32), 1, idx_BT)
    return torch.where(token_turn_BT >= 0, s_BT, torch.ones_like(s_BT))


def policy_loss(
    logp_BT: torch.Tensor,
    old_BT: torch.Tensor,
    adv_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip_c: float | None = None,
    eps_scale_BT: torch.Tensor | None = None,
    is_weight_BT: torch.Tensor | None = None,
    agg: str = "token-mean",
    norm_const: float | None = None,
    denom: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate (PPO arXiv 1707.06347), decoupled bounds (DAPO clip-higher, arXiv 2503.14476),
    optional dual-clip (arXiv 1912.09729), per-turn clip scales and TIS weights (METHODS.md 1.1, 1.2, 1.8).

    l1 = -A*ratio, l2 = -A*clip(ratio, 1-eps_low*s, 1+eps_high*s), l = max(l1, l2); with dual-clip and
    A < 0, l = min(l, -c*A); l *= w. Returns the aggregated loss and metrics (clipfrac, clipfrac_dual,
    approx_kl, ratio_max, ratio_min).
    """
    if eps_low >= 1.0 or eps_low < 0 or eps_high < 0:
        raise ValueError(f"clip range must satisfy 0 <= eps_low < 1 and eps_high >= 0, got {eps_low}, {eps_high}")
    if dual_clip_c is not None and dual_clip_c <= 1.0:
        raise ValueError(f"dual_clip_c must be > 1 (3.0 is verl's default), got {dual_clip_c}")
    adv_BT = adv_BT.to(logp_BT.dtype)
    ratio_BT = ratio_from_logprobs(logp_BT, old_BT)
    lo, hi = eps_low, eps_high
    if eps_scale_BT is not None:
        lo_BT, hi_BT = 1.0 - eps_low * eps_scale_BT, 1.0 + eps_high * eps_scale_BT
        clipped_BT = torch.maximum(torch.minimum(ratio_BT, hi_BT), lo_BT)
    else:
        clipped_BT = torch.clamp(ratio_BT, 1.0 - lo, 1.0 + hi)
    l1_BT = -adv_BT * ratio_BT
    l2_BT = -adv_BT * clipped_BT
    l_BT = torch.maximum(l1_BT, l2_BT)
    dual_BT = torch.zeros_like(l_BT, dtype=torch.bool)
    if dual_clip_c is not None:
        bound_BT = -dual_clip_c * adv_BT
        dual_BT = (adv_BT < 0) & (l_BT > bound_BT)
        l_BT = torch.where(adv_BT < 0, torch.minimum(l_BT, bound_BT), l_BT)
    if is_weight_BT is not None:
        l_BT = l_BT * is_weight_BT.detach().to(l_BT.dtype)
    loss = aggregate(l_BT, mask_BT, agg, norm_const, denom)
    with torch.no_grad():
        m = mask_BT.bool()
        n = max(int(m.sum()), 1)
        metrics = {
            "clipfrac": float(((l2_BT > l1_BT) & m).sum()) / n,
            "clipfrac_dual": float((dual_BT & m).sum()) / n,
            "approx_kl": float(((old_BT - logp_BT) * m).sum()) / n,
            "ratio_max": float(ratio_BT[m].max()) if m.any() else 1.0,
            "ratio_min": float(ratio_BT[m].min()) if m.any() else 1.0,
        }
    return loss, metrics


def kl_terms(logp_BT: torch.Tensor, ref_BT: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token KL(pi || ref) estimates with x ~ pi (Schulman, "Approximating KL divergence", 2020).

    k1 = logp - ref; k2 = 0.5 (ref - logp)^2; k3 = exp(ref - logp) - (ref - logp) - 1, clamped to
    [0, 10]; log r = ref - logp is clamped to [-20, 20] first (verl).
    """
    log_r_BT = torch.clamp(ref_BT - logp_BT, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    if estimator == "k1":
        return -log_r_BT
    if estimator == "k2":
        return 0.5 * log_r_BT**2
    if estimator == "k3":
        return torch.clamp(torch.exp(log_r_BT) - log_r_BT - 1.0, 0.0, 10.0)
    raise ValueError(f"unknown kl_estimator {estimator!r}; choose 'k1', 'k2' or 'k3'")


def kl_reward_penalty(
    rewards_BK: torch.Tensor,
    k1_BT: torch.Tensor,
    token_turn_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """Reward-form KL (METHODS.md 1.4): `rewards_BK[b,k] -= kl_coef * sum_{t in turn k} k1_t` (detached)."""
    K = rewards_BK.shape[1]
    k1_BT = (k1_BT.detach() * mask_BT.to(k1_BT.dtype)).to(rewards_BK.dtype)
    idx_BT = token_turn_BT.clamp_min(0)
    valid_BT = (token_turn_BT >= 0).to(rewards_BK.dtype)
    per_turn_BK = torch.zeros_like(rewards_BK).scatter_add_(1, idx_BT, k1_BT * valid_BT)
    return rewards_BK - kl_coef * per_turn_BK[:, :K]


def entropy_from_logits(logits_BTV: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Full-vocabulary entropy H = -sum_v p log p of the temperature-scaled logits, in float32."""
    z = logits_BTV.to(torch.float32) / (temperature if temperature > 0 else 1.0)
    logp = torch.log_softmax(z, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    vf_clip: float | None = 0.2,
    agg: str = "token-mean",
    norm_const: float | None = None,
    denom: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss (PPO arXiv 1707.06347, as CleanRL/verl; METHODS.md 1.6):
    V_clip = V_old + clip(V - V_old, -c, c); l = 0.5 max((V-R)^2, (V_clip-R)^2); None = unclipped."""
    returns = returns.detach().to(values.dtype)
    old_values = old_values.detach().to(values.dtype)
    l_unc = (values - returns) ** 2
    if vf_clip is None:
        l = 0.5 * l_unc
        clipped = torch.zeros_like(l, dtype=torch.bool)
    else:
        v_clip = old_values + torch.clamp(values - old_values, -vf_clip, vf_clip)
        l_clip = (v_clip - returns) ** 2
        l = 0.5 * torch.maximum(l_unc, l_clip)
        clipped = l_clip > l_unc
    loss = aggregate(l, mask, agg, norm_const, denom)
    with torch.no_grad():
        m = mask.bool()
        n = max(int(m.sum()), 1)
        r, v = returns[m], values[m]
        var_r = float(r.var(unbiased=False)) if r.numel() > 1 else 0.0
        ev = 1.0 - float((r - v).var(unbiased=False)) / var_r if var_r > 0 else 0.0
        metrics = {"vf_clipfrac": float((clipped & m).sum()) / n, "explained_variance": ev}
    return loss, metrics


def tis_weights(
    old_BT: torch.Tensor,
    gen_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    cap: float = 2.0,
    level: str = "token",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Truncated importance-sampling weights between trainer (`old`) and sampler (`gen`) logprobs
    (Yao, Liu et al., "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training", 2025):
    token level w = min(exp(old - gen), cap); sequence level w_b = min(exp(sum_t M (old - gen)), cap)."""
    m = mask_BT.to(old_BT.dtype)
    diff_BT = (old_BT - gen_BT).detach() * m
    if level == "token":
        raw_BT = torch.exp(torch.clamp(diff_BT, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))
    elif level == "sequence":
        raw_B = torch.exp(torch.clamp(diff_BT.sum(-1), -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))
        raw_BT = raw_B[:, None].expand_as(diff_BT)
    else:
        raise ValueError(f"unknown tis_level {level!r}; choose 'token' or 'sequence'")
    w_BT = torch.clamp(raw_BT, max=cap)
    mb = mask_BT.bool()
    n = max(int(mb.sum()), 1)
    metrics = {
        "tis/mean": float((w_BT * m).sum()) / n,
        "tis/capped_frac": float(((raw_BT > cap) & mb).sum()) / n,
        "mismatch/max_abs": float(diff_BT.abs().max()) if mb.any() else 0.0,
    }
    return w_BT, metrics


def overlong_penalty(length: torch.Tensor, l_max: int, l_cache: int, scale: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (arXiv 2503.14476): 0 up to L_max - L_cache, then linear down
    to -1 at L_max, -1 beyond; times `scale`."""
    if l_cache <= 0 or l_cache > l_max:
        raise ValueError(f"overlong_cache_tokens must lie in (0, L_max={l_max}], got {l_cache}")
    L = length.to(torch.float32)
    start = float(l_max - l_cache)
    r = torch.where(L <= start, torch.zeros_like(L), (start - L) / l_cache)
    r = torch.where(L > l_max, torch.full_like(L, -1.0), r)
    return scale * r


def keep_informative_groups(returns_B: torch.Tensor, group_B: torch.Tensor, tol: float = 1e-8) -> torch.Tensor:
    """DAPO dynamic sampling: a bool mask over episodes keeping groups whose returns are not all equal."""
    G = int(group_B.max()) + 1 if group_B.numel() else 0
    r = returns_B.to(torch.float64)
    hi = torch.full((G,), -torch.inf, dtype=torch.float64).scatter_reduce(0, group_B, r, "amax")
    lo = torch.full((G,), torch.inf, dtype=torch.float64).scatter_reduce(0, group_B, r, "amin")
    keep_G = (hi - lo) > tol
    return keep_G[group_B]


def sft_loss(
    logp_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    agg: str = "token-mean",
    norm_const: float | None = None,
    denom: float | None = None,
) -> torch.Tensor:
    """Masked next-token negative log-likelihood on action tokens (METHODS.md section 9)."""
    return aggregate(-logp_BT, mask_BT, agg, norm_const, denom)
