"""Offline re-credit: run any estimator on saved episodes, no model (issue 21, item 1).

    episodes = read_episodes("runs/quickstart")             # a RolloutStore file or a run directory
    credited = recredit(episodes, "gigpo", gamma=0.95)       # each Episode gets meta["credit"]
    RolloutStore("out.jsonl").extend(credited)

`meta["credit"] = {"estimator": NAME, "cfg": {...}, "turn": [one advantage per turn], "token":
[per turn, one advantage per action token]}` (ARCHITECTURE.md "Entry points"). Advantages are the
float32 values the estimator returned, written in their shortest float32 form.

Observation tokens are left out of the packed batch (no built-in estimator reads them; a user
estimator that reads `batch.ids_BT` sees the action tokens only). All episodes are credited as one
batch, so estimators whose statistics span groups (batch whitening, `reinforce++`) see more episodes
than a trainer's per-step batch did; group-based estimators give exactly the trainer's values. Branch
rollouts kept only for Monte-Carlo values and episodes of groups the trainer excludes (generation
errors, a NaN or infinite reward) keep no credit (the trainer never credits them either).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from creditgym import CreditBatch, Episode
from creditgym.credit import ESTIMATORS, Advantages, compute
from creditgym.sources import import_source
from creditgym.store import RolloutStore
from creditgym.trajectory import MC_ROLLOUT, excluded, mark_excluded_groups

__all__ = ["CREDIT_KEY", "attached_credit", "load_estimator", "read_episodes", "recredit"]

CREDIT_KEY = "credit"
"""`Episode.meta` key of the advantages `recredit` attaches."""
RUN_EPISODES = "episodes.jsonl"

Estimator = Callable[..., Advantages]


def read_episodes(source: str | Path) -> list[Episode]:
    """The episodes of a RolloutStore file, or of a run directory's `episodes.jsonl`."""
    path = Path(source)
    if path.is_dir():
        path = path / RUN_EPISODES
    if not path.is_file():
        raise FileNotFoundError(
            f"no episodes at {source}: give a RolloutStore .jsonl file or a run directory holding {RUN_EPISODES}"
        )
    episodes = RolloutStore(path).read()
    if not episodes:
        raise ValueError(f"{path} holds no episodes")
    return episodes


def load_estimator(spec: str) -> tuple[str, Estimator]:
    """`(name, fn)` for a registered name, `path/to/file.py:NAME` or `module:NAME`.

    NAME is a registered estimator name (the file's `@register_estimator` ran on import) or the name
    of a function in that file or module, which is then called as `fn(batch, **cfg)`.
    """
    if spec in ESTIMATORS:
        return spec, ESTIMATORS[spec]
    if ":" not in spec:
        raise KeyError(
            f"unknown estimator {spec!r}; registered: {sorted(ESTIMATORS)}; "
            "or give your own as path/to/file.py:NAME or module:NAME"
        )
    where, name = spec.rsplit(":", 1)
    module = import_source(where)
    if name in ESTIMATORS:
        return name, ESTIMATORS[name]
    fn = getattr(module, name, None)
    if not callable(fn):
        raise KeyError(f"{where} defines no estimator {name!r} (neither registered nor a function of that name)")
    return getattr(fn, "estimator_name", name), fn


def _check_needs(name: str, needs: Mapping[str, Any], episodes: Sequence[Episode]) -> None:
    """Raise, saying what to supply, when saved episodes cannot give what the estimator needs."""
    values = needs.get("values")
    if values == "critic":
        raise ValueError(
            f"estimator {name!r} needs critic values, which recredit cannot compute (it runs no model); "
            "train with PPOTrainer, which supplies them, or pick a critic-free estimator"
        )
    if values == "mc":
        raise ValueError(
            f"estimator {name!r} needs Monte-Carlo values from replay branches ({needs.get('branches')}), which "
            "recredit cannot collect (it runs no model); collect with a Collector and "
            "Collector.branch(episodes, at_turns, n) (as GRPOTrainer does), or pick an estimator without branches"
        )
    probe = needs.get("probe")
    if probe and not all(probe in ep.probe0 or any(probe in t.probe for t in ep.turns) for ep in episodes):
        raise ValueError(
            f"estimator {name!r} needs per-turn probe values {probe!r}, which these episodes lack and recredit "
            f"cannot compute (it runs no model); collect them with Collector(probes=[...]) "
            f"(the {probe!r} probe: {'GoldAnswerProbe' if probe == 'gold' else 'SIOPProbe'})"
        )
    if needs.get("greedy") and not all("greedy_return" in ep.meta for ep in episodes):
        raise ValueError(
            f"estimator {name!r} needs a greedy rollout per group (meta['greedy_return']); collect with "
            "Collector(greedy_baseline=True)"
        )
    key = needs.get("outcome_key")
    if key and not all(key in ep.outcome for ep in episodes):
        raise ValueError(f"estimator {name!r} needs outcome {key!r} in every episode's outcome; collect it with its probe")


def _float32_list(x: np.ndarray) -> list[float]:
    """Shortest decimal that reads back as the same float32 (compact JSON, exact round trip)."""
    unique, inverse = np.unique(x.astype(np.float32), return_inverse=True)
    short = [float(str(v)) for v in unique]
    return [short[i] for i in inverse.reshape(-1)]


def _credit_dicts(name: str, cfg: Mapping[str, Any], batch: CreditBatch, adv: Advantages) -> list[dict[str, Any]]:
    turn_BK = adv.turn_BK.detach().float().cpu().numpy()
    token_BT = adv.token_BT.detach().float().cpu().numpy()
    tok_turn_BT = batch.token_turn_BT.cpu().numpy()
    n_B = batch.turn_mask_BK.sum(1).cpu().numpy()
    out = []
    for b in range(batch.B):
        n = int(n_B[b])
        action_T = tok_turn_BT[b] >= 0  # action tokens, in turn order
        values = _float32_list(token_BT[b][action_T])
        ends = np.cumsum(np.bincount(tok_turn_BT[b][action_T], minlength=n)).tolist()
        token = [values[start:end] for start, end in zip([0, *ends[:-1]], ends)]
        out.append({"estimator": name, "cfg": dict(cfg), "turn": _float32_list(turn_BK[b, :n]), "token": token})
    return out


def _actions_only(ep: Episode) -> Episode:
    """The episode without observation tokens: estimators read only the action-token layout, and
    10,000 long observations would not fit a packed batch in memory."""
    turns = tuple(dataclasses.replace(t, obs_ids=()) for t in ep.turns)
    return dataclasses.replace(ep, turns=turns, final_obs_ids=())


def recredit(episodes: Sequence[Episode], name: str, **cfg: Any) -> list[Episode]:
    """The same episodes with `meta["credit"]` holding estimator `name`'s advantages (module doc).

    `name`: a registered estimator, `file.py:NAME` or `module:NAME`. `cfg`: its knobs (checked like
    `credit.compute`). Raises ValueError saying what to supply when the estimator needs data that
    saved episodes lack (critic or Monte-Carlo values, probes, greedy rollouts).
    """
    label, fn = load_estimator(name)
    needs = dict(getattr(fn, "needs", {}) or {})
    marked = mark_excluded_groups(episodes)  # groups with a NaN/inf reward are dropped, as in training
    keep = [i for i, ep in enumerate(marked) if not (ep.meta.get(MC_ROLLOUT) or excluded(ep))]
    if not keep:
        raise ValueError("no episode to credit: every one is a branch rollout or of an excluded group")
    chosen = [episodes[i] for i in keep]
    _check_needs(label, needs, chosen)
    packed = [_actions_only(ep) for ep in chosen]
    batch = CreditBatch.from_episodes(packed, outcome_key=needs.get("outcome_key"), probe_key=needs.get("probe"))
    adv = compute(label, batch, **cfg) if ESTIMATORS.get(label) is fn else fn(batch, **cfg)
    if not bool(np.isfinite(adv.turn_BK.detach().cpu().numpy()).all()):
        raise ValueError(f"estimator {label!r} gave NaN or inf advantages; check the episodes' rewards")
    out = list(episodes)
    for i, credit in zip(keep, _credit_dicts(label, cfg, batch, adv)):
        ep = episodes[i]
        out[i] = dataclasses.replace(ep, meta={**ep.meta, CREDIT_KEY: credit})
    return out


def attached_credit(ep: Episode) -> dict[str, Any] | None:
    """The `meta["credit"]` of an episode when it is well-formed (one value per turn and per action token)."""
    credit = ep.meta.get(CREDIT_KEY)
    if not isinstance(credit, dict) or len(credit.get("turn", ())) != ep.num_turns:
        return None
    token = credit.get("token", ())
    if len(token) != ep.num_turns or any(len(a) != len(t.action_ids) for a, t in zip(token, ep.turns)):
        return None
    if not all(math.isfinite(float(x)) for x in credit["turn"]):
        return None
    return credit
