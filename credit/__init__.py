"""Credit assignment estimators: CreditBatch -> per-turn and per-token advantages (design/CREDIT.md).

    from creditgym.credit import compute
    adv = compute("grpo", batch)                 # Advantages(turn_BK, token_BT, metrics, ...)
    adv = compute("gigpo", batch, gamma=0.95)    # knobs are checked: unknown ones raise TypeError

`ESTIMATORS` maps registry names to pure functions; `@register_estimator(name, needs={...})` adds
your own (see examples/custom_estimator.py); `REFERENCES` maps the same names to the slow loop
references each family module keeps beside its vectorised code. `describe(adv, batch)` renders a
short text report.
"""

from creditgym.credit import digirl, gae, gigpo, infogain, outcome, pvd, segment, tree, turn  # noqa: F401  (registers the built-ins)
from creditgym.credit.advantages import Advantages, broadcast_to_tokens, make_advantages
from creditgym.credit.describe import describe
from creditgym.credit.registry import COLLECTION_KNOBS, ESTIMATORS, REFERENCES, compute, register_estimator

__all__ = [
    "COLLECTION_KNOBS", "ESTIMATORS", "REFERENCES", "Advantages", "broadcast_to_tokens", "compute",
    "describe", "make_advantages", "register_estimator",
]  # fmt: skip
