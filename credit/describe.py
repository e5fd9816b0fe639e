"""`describe(adv, batch)`: a small plain-text report of an `Advantages` result."""

from __future__ import annotations

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import Advantages

__all__ = ["describe"]


def _fmt(x: float) -> str:
    return f"{x:+.4f}" if abs(x) < 1e4 else f"{x:+.3e}"


def describe(adv: Advantages, batch: CreditBatch, max_episodes: int = 6) -> str:
    """Render the metrics and the per-turn advantages of the first `max_episodes` episodes.

    One host copy of the shown rows; meant for logs, the CLI and notebooks.
    """
    n_B = batch.turn_mask_BK.sum(1)
    shown = min(batch.B, max_episodes)
    rows = adv.turn_BK[:shown].detach().to("cpu").double().tolist()
    meta = batch.group_B[:shown].tolist(), n_B[:shown].tolist(), batch.truncated_B[:shown].tolist()
    R = batch.outcome_B[:shown].detach().to("cpu").double().tolist()
    lines = [f"Advantages: B={batch.B} K={batch.K} T={batch.T} action_tokens={batch.num_action_tokens()}"]
    width = max((len(k) for k in adv.metrics), default=0)
    lines.append("metrics:")
    for key in sorted(adv.metrics):
        lines.append(f"  {key:<{width}}  {adv.metrics[key]:.4f}")
    extra = [name for name in ("clip_scale_BK", "returns_BK", "returns_BT") if getattr(adv, name) is not None]
    if extra:
        lines.append("also: " + ", ".join(extra))
    lines.append(f"turn advantages (first {shown} episodes):")
    for b in range(shown):
        g, n, trunc = meta[0][b], int(meta[1][b]), bool(meta[2][b])
        vals = " ".join(_fmt(v) for v in rows[b][:n]) or "(no turns)"
        end = "trunc" if trunc else "term"
        lines.append(f"  ep {b:>3} group {g:>3} R={_fmt(R[b])} n={n} {end:<5} | {vals}")
    if batch.B > shown:
        lines.append(f"  ... {batch.B - shown} more episodes")
    return "\n".join(lines)
