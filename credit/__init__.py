"""Credit assignment estimators: CreditBatch -> per-turn and per-token advantages (design/CREDIT.md).

    from creditgym.credit import compute
    adv = compute("grpo", batch)                 # Advantages(turn_BK, token_BT, metrics, ...)
    adv = compute("gigpo", batch, gamma=0.95)    # knobs are checked: unknown ones raise TypeError

`ESTIMATORS` maps registry names to pure functions; `@register_estimator(name, needs={...})` adds
your own (see examples/custom_estimator.py). `describe(adv, batch)` renders a short text report.
"""

from creditgym.credit import gae as _gae  # noqa: F401  (registers the built-ins)
from creditgym.credit import gigpo as _gigpo  # noqa: F401
from creditgym.credit import infogain as _infogain  # noqa: F401
from creditgym.credit import outcome as _outcome  # noqa: F401
from creditgym.credit import pvd as _pvd  # noqa: F401
from creditgym.credit import segment as _segment  # noqa: F401
from creditgym.credit import tree as _tree  # noqa: F401
from creditgym.credit import turn as _turn  # noqa: F401
from creditgym.credit.advantages import Advantages, broadcast_to_tokens, make_advantages
from creditgym.credit.describe import describe
from creditgym.credit.registry import COLLECTION_KNOBS, ESTIMATORS, compute, register_estimator

__all__ = [
    "COLLECTION_KNOBS",
    "ESTIMATORS",
    "Advantages",
    "broadcast_to_tokens",
    "compute",
    "describe",
    "make_advantages",
    "register_estimator",
]
