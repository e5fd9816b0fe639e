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
    "COLLECTION_KNOBS", "ESTIMATORS", "REFERENCES", "Estimator", "check_branches_spec", "check_choice",
    "check_finite", "compute", "knob_default", "register_estimator", "require", "trains_on_branches",
]  # fmt: skip

log = logging.getLogger(__name__)

Estimator = Callable[..., Advantages]
F = TypeVar("F", bound=Callable[..., Advantages])

ESTIMATORS: dict[str, Estimator] = {}
REFERENCES: dict[str, Estimator] = {}  # name -> slow loop reference with the same knobs (CREDIT.md 9.1)

# keys of `needs` (ARCHITECTURE.md "Credit"): they configure collection, never an estimator call
COLLECTION_KNOBS = ("probe", "outcome_key", "branches", "values", "greedy", "optional")


def register_estimator(
    name: str, needs: dict[str, Any] | None = None, loop: Estimator | None = None
) -> Callable[[F], F]:
    """Register `fn(batch, **cfg) -> Advantages` under `name` and set `fn.needs`.

    `needs` says what collection must supply (CREDIT.md 1.4), e.g. `{"probe": "gold"}` or
    `{"values": "critic"}`; trainers read it. `loop` is the slow loop reference with the same knobs
    (CREDIT.md 9.1), kept in `REFERENCES`: the tests and `creditgym bench credit` compare the two.
    A name taken by a different function is an error.
    """
    unknown = sorted(set(needs or {}) - set(COLLECTION_KNOBS))
    if unknown:
        raise ValueError(f"register_estimator({name!r}): unknown needs keys {unknown}; allowed: {COLLECTION_KNOBS}")
    if (needs or {}).get("branches"):
        check_branches_spec(name, needs["branches"])  # type: ignore[index]

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
        if loop is not None:
            REFERENCES[name] = loop
        return fn

    return deco


BRANCH_KEYS = ("at", "n", "depth", "train")


def check_branches_spec(name: str, spec: Any) -> None:
    """Validate a `needs["branches"]` spec (CREDIT.md 1.4): `{"at": "every_turn", "n": int}` or
    `{"at": "tree", "n": int, "depth": int}`, plus the optional `train` flag: a bool (train on the
    branch rollouts too, or use them for Monte-Carlo values only) or `{knob: value}` (train on them
    when each of the estimator's knobs equals that value, e.g. spo's `{"variant": "tree"}`)."""
    where = f"estimator {name!r}: needs['branches']"
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be a dict like {{'at': 'every_turn', 'n': 4}}, got {spec!r}")
    unknown = sorted(set(spec) - set(BRANCH_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; allowed: {BRANCH_KEYS}")
    if spec.get("at") not in ("every_turn", "tree"):
        raise ValueError(f"{where}['at'] must be 'every_turn' or 'tree', got {spec.get('at')!r}")
    for key in ("n", "depth") if spec["at"] == "tree" else ("n",):
        value = spec.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}[{key!r}] must be an int >= 1, got {value!r}")
    train = spec.get("train", True)
    if not isinstance(train, (bool, dict)):
        raise ValueError(f"{where}['train'] must be a bool or a {{knob: value}} dict, got {train!r}")


def trains_on_branches(fn: Estimator, spec: dict[str, Any], cfg: dict[str, Any]) -> bool:
    """Whether a trainer trains on the branch rollouts of `spec` (else they only give Monte-Carlo
    values): `spec["train"]` (default True), resolved against `cfg` and the estimator's knob defaults
    when it is a `{knob: value}` dict."""
    train = spec.get("train", True)
    if isinstance(train, bool):
        return train
    defaults = {
        p.name: p.default
        for p in list(inspect.signature(fn).parameters.values())[1:]
        if p.default is not inspect.Parameter.empty
    }
    return all({**defaults, **cfg}.get(knob) == value for knob, value in train.items())


def knob_default(fn: Estimator, knob: str, cfg: dict[str, Any], fallback: Any) -> Any:
    """`cfg[knob]`, else the estimator's default for that knob, else `fallback`."""
    if knob in cfg:
        return cfg[knob]
    param = inspect.signature(fn).parameters.get(knob)
    if param is None or param.default is inspect.Parameter.empty:
        return fallback
    return param.default


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

