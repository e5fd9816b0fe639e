"""The estimator registry, `compute`, and the error messages of CREDIT.md 1.4."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from creditgym.batch import CreditBatch
from creditgym.credit.advantages import Advantages

__all__ = [
    "COLLECTION_KNOBS",
    "ESTIMATORS",
    "Estimator",
    "check_choice",
    "check_finite",
    "compute",
    "register_estimator",
    "require",
]

log = logging.getLogger(__name__)

Estimator = Callable[..., Advantages]
F = TypeVar("F", bound=Callable[..., Advantages])

ESTIMATORS: dict[str, Estimator] = {}

# keys of `needs` (ARCHITECTURE.md "Credit"): they configure collection, never an estimator call
COLLECTION_KNOBS = ("probe", "outcome_key", "branches", "values", "greedy", "optional")


def register_estimator(name: str, needs: dict[str, Any] | None = None) -> Callable[[F], F]:
    """Register `fn(batch, **cfg) -> Advantages` under `name` and set `fn.needs`.

    `needs` says what collection must supply (CREDIT.md 1.4), e.g. `{"probe": "gold"}` or
    `{"values": "critic"}`; trainers read it. A name taken by a different function is an error.
    """
    unknown = sorted(set(needs or {}) - set(COLLECTION_KNOBS))
    if unknown:
        raise ValueError(f"register_estimator({name!r}): unknown needs keys {unknown}; allowed: {COLLECTION_KNOBS}")

    def deco(fn: F) -> F:
        old = ESTIMATORS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(
                f"estimator {name!r} is already registered by {old.__module__}.{old.__qualname__}; "
                "pick another name"
            )
        fn.needs = dict(needs or {})  # type: ignore[attr-defined]
        fn.estimator_name = name  # type: ignore[attr-defined]
        ESTIMATORS[name] = fn
        return fn

    return deco


def knobs_of(fn: Estimator) -> tuple[str, ...] | None:
    """The keyword knobs an estimator accepts (None when it takes `**kwargs`)."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params)


def compute(name: str, batch: CreditBatch, **cfg: Any) -> Advantages:
    """Run the estimator `name` on `batch` with knobs `cfg`: the single entry point of trainers and CLI.

    Unknown knobs and collection knobs (keys of `needs`) raise TypeError.
    """
    if name not in ESTIMATORS:
        raise KeyError(f"unknown estimator {name!r}; registered: {sorted(ESTIMATORS)}")
    fn = ESTIMATORS[name]
    needs = getattr(fn, "needs", {})
    collection = sorted(k for k in cfg if k in COLLECTION_KNOBS)
    if collection:
        raise TypeError(
            f"estimator {name!r}: {collection} are collection knobs (its needs: {needs}), not estimator "
            "knobs; set them through the trainer (collect_overrides), not in the estimator config"
        )
    allowed = knobs_of(fn)
    if allowed is not None:
        unknown = sorted(set(cfg) - set(allowed))
        if unknown:
            raise TypeError(f"estimator {name!r} got unknown knob(s) {unknown}; its knobs are {list(allowed)}")
    return fn(batch, **cfg)


def require(name: str, batch: CreditBatch, field: str, what: str, how: str) -> torch.Tensor:
    """Return `batch.<field>` or raise the missing-input error of CREDIT.md 1.4."""
    value = getattr(batch, field)
    if value is None:
        raise ValueError(f"estimator {name!r} needs {what}: batch.{field} is None; {how}")
    return value


def check_choice(name: str, knob: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise the bad-knob error of CREDIT.md 1.4 when `value` is not one of `choices`."""
    if value not in choices:
        raise ValueError(f"estimator {name!r}: {knob} must be one of {tuple(choices)}, got {value!r}")


def check_finite(name: str, field: str, x: torch.Tensor, used: torch.Tensor) -> None:
    """Raise the bad-data error of CREDIT.md 1.4 when `x` is NaN/inf at a `used` position."""
    if bool(torch.isfinite(x.sum())):  # fast path: one reduction, no [B, T] temporaries
        return
    bad = used & ~torch.isfinite(x)
    count = int(bad.sum())
    if count:
        first = [int(v) for v in bad.nonzero()[0]]
        where = f"episode {first[0]}" + (f", index {first[1]}" if len(first) > 1 else "")
        what = "NaN" if bool(torch.isnan(x[bad]).all()) else "NaN or infinite"
        raise ValueError(f"estimator {name!r}: {field} is {what} at {count} valid positions (first: {where})")


def float_dtype(batch: CreditBatch) -> torch.dtype:
    """The dtype estimators compute and return in: that of `rewards_BK`."""
    return batch.rewards_BK.dtype
