"""The credit accuracy benchmark (docs/accuracy.md; issue 19 item 1): every registered estimator's
turn advantages against Monte-Carlo truth from replay branching, with the truth's error and noise
ceiling, and what each estimator's collection costs.

    creditgym bench accuracy creditgym/Search-v0 --epsilon 0.4 --env-kwargs '{"hops": 3}'

`measure_accuracy(env_id, policy, ...)` is the library function behind the command: it collects one
set of base episodes, forks `branches` replay rollouts before every turn of each for the truth, then
gives every estimator what its `needs` ask for on those same base episodes (its own, fresh branch
rollouts, Monte-Carlo values, greedy rollouts) and compares its advantages with the truth.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
import typer

from creditgym.agents import probes
from creditgym.agents.base import Sampling
from creditgym.agents.offline import mc_values, return_to_go
from creditgym.agents.pretrained import load
from creditgym.agents.rollout import Collector, derive_seed
from creditgym.agents.scripted import ScriptedPolicy
from creditgym.batch import CreditBatch
from creditgym.benchmarks.accuracy_critic import CriticSettings, critic_backbone, fit_critic
from creditgym.benchmarks.accuracy_metrics import TurnTruth, agreement, noise_ceiling, truth_from_branches
from creditgym.credit import ESTIMATORS, compute
from creditgym.credit.registry import knob_default, trains_on_branches
from creditgym.sources import import_env_source, json_object
from creditgym.store import RolloutStore
from creditgym.trajectory import Episode, excluded, mark_excluded_groups

__all__ = ["AccuracyReport", "CriticFitSet", "EstimatorRow", "collect_critic_set", "TruthSummary", "main", "measure_accuracy", "measure_truth", "reannotate", "resolve_policy"]

log = logging.getLogger(__name__)

NEEDS_MODEL = "needs a model policy: --policy MODEL_DIR"
PROBES = {"gold": "GoldAnswerProbe", "siop": "SIOPProbe"}  # needs["probe"] -> agents.probes class


@dataclass(frozen=True)
class EstimatorRow:
    """One estimator's accuracy and cost; `skipped` holds the reason when it was not measured."""

    name: str
    spearman: float = math.nan
    pearson: float = math.nan
    sign_agree: float = math.nan
    rel_mse: float = math.nan
    spearman_first: float = math.nan
    spearman_later: float = math.nan
    episodes_per_sample: float = math.nan  # env episodes (base, branches, greedy) per trained sample
    episodes_per_base: float = math.nan  # the same per base episode (GRPO = 1)
    tokens_per_sample: float = math.nan  # generated action tokens per trained sample
    wall_s: float = math.nan  # base collection + its own extra collection + credit
    trains_on_branches: bool = False
    critic_episodes: int = 0  # held-out episodes of the same policy its critic was fitted on (not in episodes/sample)
    skipped: str | None = None


@dataclass(frozen=True)
class TruthSummary:
    """How precise the truth is: branches per turn, turns, mean |A*| and SE, the share of turns
    with |A*| > 2 SE, the noise ceilings (rank and Pearson), and its cost."""

    branches: int
    turns: int
    base_episodes: int
    mean_turns: float
    mean_abs_adv: float
    mean_se: float
    frac_sure: float
    ceiling_spearman: float
    ceiling_pearson: float
    episodes: int
    wall_s: float


@dataclass(frozen=True)
class AccuracyReport:
    env_id: str
    policy: str
    config: dict[str, Any]
    truth: TruthSummary
    rows: list[EstimatorRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def clean(x: Any) -> Any:
            if isinstance(x, float):
                return None if math.isnan(x) else round(x, 6)
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list):
                return [clean(v) for v in x]
            return x

        return clean(dataclasses.asdict(self))  # type: ignore[no-any-return]

    def to_json(self, deterministic: bool = False) -> str:
        """JSON text; `deterministic` drops the wall times (everything else is a function of the seeds)."""
        d = self.to_dict()
        if deterministic:
            d["truth"].pop("wall_s")
            for r in d["rows"]:
                r.pop("wall_s")
        return json.dumps(d, indent=2, sort_keys=True)

    def table(self) -> str:
        """A markdown table, one row per estimator, best rank correlation first."""
        t = self.truth
        head = (
            f"{self.env_id} | policy {self.policy} | {t.base_episodes} episodes ({t.mean_turns:.1f} turns), "
            f"truth: {t.branches} branches/turn, mean |A*| {t.mean_abs_adv:.3f}, mean SE {t.mean_se:.3f}, "
            f"|A*|>2SE on {100 * t.frac_sure:.0f}% of turns, noise ceiling {fmt(t.ceiling_spearman)} "
            f"(Pearson {fmt(t.ceiling_pearson)})"
        )
        cols = "| estimator | rank corr | Pearson | sign agree | rel. MSE | rank corr turn 0 | rank corr turns 1+ | episodes/sample | episodes/base episode | tokens/sample | wall s |"
        lines = [head, "", cols, "|" + "---|" * cols.count(" | ") + "---|"]
        measured = sorted((r for r in self.rows if r.skipped is None), key=lambda r: -_key(r.spearman))
        for r in measured:
            lines.append(
                f"| {r.name} | {fmt(r.spearman)} | {fmt(r.pearson)} | {fmt(r.sign_agree)} | {fmt(r.rel_mse)} | "
                f"{fmt(r.spearman_first)} | {fmt(r.spearman_later)} | {r.episodes_per_sample:.2f} | "
                f"{r.episodes_per_base:.2f}{_critic_note(r)} | {r.tokens_per_sample:.0f} | {r.wall_s:.1f} |"
            )
        for r in self.rows:
            if r.skipped is not None:
                lines.append(f"| {r.name} | skipped: {r.skipped} |" + " |" * (cols.count(" | ") - 1))
        return "\n".join(lines)


def _critic_note(r: EstimatorRow) -> str:
    return f" (+{r.critic_episodes} critic fit episodes)" if r.critic_episodes else ""


def fmt(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.2f}"


def _key(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def resolve_policy(policy: Any, env_id: str, epsilon: float = 0.0, seed: int = 0) -> tuple[Any, str, bool]:
    """(policy object, label, is_model): "scripted" -> the env's ScriptedPolicy with action noise
    `epsilon`; another string -> a model directory or known name for `agents.pretrained.load`; any
    other object is used as the Policy (a model when it has a `model` attribute)."""
    if isinstance(policy, str):
        if policy == "scripted":
            return ScriptedPolicy.for_env(env_id, epsilon=epsilon, seed=seed), f"scripted(epsilon={epsilon:g})", False
        return load(policy, seed=seed), policy, True
    return policy, type(policy).__name__, hasattr(policy, "model")


def _skip_reason(needs: Mapping[str, Any], is_model: bool, has_network: bool) -> str | None:
    if needs.get("probe") and not is_model:
        return NEEDS_MODEL + f" (probe {needs['probe']!r} scores the policy's log-probabilities)"
    if needs.get("probe") and needs["probe"] not in PROBES:
        return f"unknown probe {needs['probe']!r}; this benchmark knows {sorted(PROBES)}"
    if needs.get("values") == "critic" and not is_model:
        return NEEDS_MODEL + " (its critic is a copy of the policy's network, fitted on the policy's episodes)"
    if needs.get("values") == "critic" and not has_network:
        return "needs a critic, which copies the policy's network: this policy has no base_model() with a config.hidden_size"
    return None


def _tokens(episodes: Sequence[Episode]) -> int:
    return sum(len(t.action_ids) for e in episodes for t in e.turns)


def measure_truth(collector: Collector, base: Sequence[Episode], branches: int, gamma: float = 1.0) -> TurnTruth:
    """Fork `branches` replay rollouts before every turn of every base episode and turn their
    discounted returns-to-go from the fork into the truth (`truth_from_branches`)."""
    rollouts = collector.branch(base, "all", branches)
    by_fork: dict[tuple[str, int], list[float]] = {}
    for ep in rollouts:
        k = int(ep.meta["branch_at"])
        by_fork.setdefault((str(ep.meta["branch_of"]), k), []).append(
            return_to_go([t.reward for t in ep.turns], gamma)[k] if ep.num_turns > k else 0.0
        )
    returns = [[by_fork.get((ep.episode_id, k), []) for k in range(ep.num_turns)] for ep in base]
    return truth_from_branches([[t.reward for t in ep.turns] for ep in base], returns, gamma)


def _flat(turn_BK: Any, base: Sequence[Episode]) -> np.ndarray:
    a_BK = turn_BK.detach().double().cpu().numpy()
    return np.asarray([a_BK[b, k] for b, ep in enumerate(base) for k in range(ep.num_turns)], np.float64)


def _make_env(env_id: str | Sequence[Any], env_kwargs: Mapping[str, Any] | None) -> Any:
    """A fresh env: `gymnasium.make(env_id, **env_kwargs)`, or the first of a list of env constructors."""
    if isinstance(env_id, str):
        return gymnasium.make(env_id, **dict(env_kwargs or {}))
    make_env: Any = env_id[0]
    return make_env()


def _env_metadata(env_id: str | Sequence[Any], env_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    env = _make_env(env_id, env_kwargs)
    try:
        return dict(env.unwrapped.metadata)
    finally:
        env.close()


@dataclass(frozen=True)
class CriticFitSet:
    """What critic estimators are fitted on: the policy's network, held-out episodes of the same
    policy (other tasks than the base episodes'), the fit settings and the seconds their collection took."""

    backbone: Any
    episodes: list[Episode]
    settings: CriticSettings
    collect_s: float


CRITIC_SEED = 0xC217C  # the fit set's seed is derive_seed(seed, CRITIC_SEED): tasks apart from the base episodes'


def collect_critic_set(
    policy: Any, env_id: str | Sequence[Any], settings: CriticSettings, n_base: int, group_size: int, seed: int,
    env_kwargs: Mapping[str, Any] | None, history: Any, max_context_tokens: int | None, progress: bool = False,
    sampling: Sampling | None = None,
) -> CriticFitSet:
    """Collect the critic's held-out fit set: `settings.episodes` (None: `n_base`) episodes of
    `policy` in whole groups, seeded apart from the base episodes."""
    backbone = critic_backbone(policy)
    if backbone is None:
        raise ValueError("the critic copies the policy's network; this policy has none (pass a model policy)")
    t0 = time.perf_counter()
    n_groups = max(1, math.ceil((settings.episodes or n_base) / group_size))
    collector = Collector(policy, env_id, group_size=group_size, env_kwargs=env_kwargs, history=history,
                          max_context_tokens=max_context_tokens, progress=progress, sampling=sampling)  # fmt: skip
    try:
        eps = [e for e in mark_excluded_groups(collector.collect(n_groups, seed=derive_seed(seed, CRITIC_SEED))) if not excluded(e)]
    finally:
        collector.close()
    return CriticFitSet(backbone, eps, settings, time.perf_counter() - t0)


def _run_estimator(
    name: str, collector: Collector, base: Sequence[Episode], truth: TurnTruth, base_s: float, greedy_eps: int,
    metadata: Mapping[str, Any] | None = None, critic: CriticFitSet | None = None, progress: bool = False,
) -> EstimatorRow:
    fn = ESTIMATORS[name]
    needs = dict(getattr(fn, "needs", {}) or {})
    t0 = time.perf_counter()
    spec = needs.get("branches")
    rollouts: list[Episode] = list(collector.branch_for(base, spec)) if spec else []
    train = trains_on_branches(fn, spec, {}) if spec else False
    trained = [*base, *rollouts] if train else list(base)
    mc = [] if train else rollouts
    if needs.get("probe"):  # score the same episodes, as the Collector's probes would (agents/probes.py)
        probe = getattr(probes, PROBES[needs["probe"]])()
        trained = probes.apply_probes([probe], trained, collector.policy_for, metadata or {})
    if any(excluded(e) for e in mark_excluded_groups(rollouts)):
        log.warning("accuracy: %s: some branch rollouts were excluded (non-finite reward or generation error)", name)
    batch = CreditBatch.from_episodes(trained, outcome_key=needs.get("outcome_key"), probe_key=needs.get("probe"))
    if needs.get("values") == "mc":
        gamma = float(knob_default(fn, "gamma", {}, 1.0))
        batch = batch.with_values(values_BK=mc_values(trained, mc, gamma=gamma, num_slots=batch.K))
    fit_s, fit_n = 0.0, 0
    if needs.get("values") == "critic":
        if critic is None:
            raise ValueError(f"estimator {name!r} needs a critic and no fit set was collected")
        attach = fit_critic(name, critic.backbone, critic.episodes, critic.settings, needs.get("outcome_key"), progress)
        batch = attach(batch, trained)
        fit_s, fit_n = critic.collect_s, len(critic.episodes)
    adv = compute(name, batch)
    wall = base_s + fit_s + time.perf_counter() - t0
    a_N = _flat(adv.turn_BK[: len(base)], base)
    agr = agreement(a_N, truth)
    greedy = greedy_eps if needs.get("greedy") else 0
    n_eps = len(base) + len(rollouts) + greedy
    mean_tokens = _tokens(base) / max(len(base), 1)  # greedy rollouts are not returned: priced at the base mean
    n_tokens = _tokens(base) + _tokens(rollouts) - _prefix_tokens(rollouts) + greedy * mean_tokens
    return EstimatorRow(
        name=name, spearman=agr.spearman, pearson=agr.pearson, sign_agree=agr.sign_agree, rel_mse=agr.rel_mse,
        spearman_first=agr.spearman_first, spearman_later=agr.spearman_later,
        episodes_per_sample=n_eps / len(trained), episodes_per_base=n_eps / len(base), tokens_per_sample=n_tokens / len(trained), wall_s=wall,
        trains_on_branches=train, critic_episodes=fit_n,
    )  # fmt: skip


def _prefix_tokens(rollouts: Sequence[Episode]) -> int:
    """Action tokens a branch reuses from its original (the turns before `branch_at`): not generated."""
    return sum(len(t.action_ids) for e in rollouts for t in e.turns[: int(e.meta.get("branch_at", 0))])


def _collect_truth(
    collector: Collector, num_groups: int, seed: int, branches: int, gamma: float
) -> tuple[list[Episode], TurnTruth, float, float]:
    """Collect the base episodes and their truth: (base, truth, base seconds, truth seconds)."""
    t0 = time.perf_counter()
    base_all = mark_excluded_groups(collector.collect(num_groups, seed=seed))
    base = [e for e in base_all if not excluded(e)]
    if len(base) < len(base_all):
        log.warning("accuracy: dropped %d base episodes of excluded groups", len(base_all) - len(base))
    if not base:
        raise RuntimeError("accuracy: every base group was excluded (non-finite rewards or generation errors)")
    truncated = sum(bool(e.outcome.get("collector_truncated")) for e in base)
    if truncated:
        log.warning("accuracy: %d of %d base episodes ended collector_truncated (context budget)", truncated, len(base))
    base_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    truth = measure_truth(collector, base, branches, gamma)
    return base, truth, base_s, time.perf_counter() - t1


def _ceiling(truth: TurnTruth, rank: bool) -> float:
    """The noise ceiling; NaN for a loaded truth without its half-truths (files from before they were saved)."""
    if np.isnan(truth.half1_N).any() or np.isnan(truth.half2_N).any():
        return math.nan
    return noise_ceiling(truth.half1_N, truth.half2_N, rank=rank)


def reannotate(episodes: Sequence[Episode], env_id: str | Sequence[Any], env_kwargs: Mapping[str, Any] | None) -> list[Episode]:
    """Replay each episode's actions (its seed and reset options) in a fresh env and copy the env's
    `state_key` and `abstract_state` of every turn, and the final abstract state, onto the episode.
    The determinism contract makes the replay exact; a reward that differs from the recorded one
    means the env or its kwargs changed the dynamics, and raises."""
    env = _make_env(env_id, env_kwargs).unwrapped
    out = []
    try:
        for ep in episodes:
            _, info = env.reset(seed=ep.seed, options=dict(ep.meta.get("options") or {}) or None)
            turns = []
            for k, t in enumerate(ep.turns):
                before = info
                _, r, _, _, info = env.step(t.action_text)
                if not math.isclose(float(r), float(t.reward), abs_tol=1e-9):
                    raise ValueError(f"reannotate: episode {ep.episode_id} turn {k}: replay reward {r} != recorded "
                                     f"{t.reward}; the env kwargs must keep the dynamics the truth was measured on")  # fmt: skip
                keep = {"abstract_state": str(before.get("abstract_state", t.info.get("abstract_state", "")))}
                turns.append(dataclasses.replace(t, state_key=str(before.get("state_key", t.state_key)), info={**t.info, **keep}))
            meta = {**ep.meta, "final_abstract_state": str(info.get("abstract_state", ep.meta.get("final_abstract_state", "")))}
            out.append(dataclasses.replace(ep, turns=tuple(turns) if isinstance(ep.turns, tuple) else turns, meta=meta))
    finally:
        env.close()
    return out


def _load_truth(
    path: str, env_id: str | Sequence[Any], env_kwargs: Mapping[str, Any] | None
) -> tuple[list[Episode], TurnTruth, float, float, int]:
    """Base episodes and truth saved by `save_episodes` (their env annotations recomputed by
    `reannotate`); the half-truths of older files are absent, so their noise ceiling is NaN."""
    t0 = time.perf_counter()
    saved = RolloutStore(path).read()
    missing = [e.episode_id for e in saved if "mc_truth" not in e.meta]
    if not saved or missing:
        raise ValueError(f"{path}: {len(missing)} of {len(saved)} episodes carry no meta['mc_truth']; write the file "
                         "with `creditgym bench accuracy ... --save-episodes FILE`")  # fmt: skip
    base = reannotate(saved, env_id, env_kwargs)
    cols: dict[str, list[float]] = {k: [] for k in ("adv", "se", "value", "half1", "half2")}
    turn_N: list[int] = []
    episode_N: list[int] = []
    for b, ep in enumerate(base):
        mc = ep.meta["mc_truth"]
        n = ep.num_turns
        for k in cols:
            cols[k].extend(mc.get(k, [math.nan] * n))
        turn_N.extend(range(n))
        episode_N.extend([b] * n)
    arr = {k: np.asarray(v, np.float64) for k, v in cols.items()}
    truth = TurnTruth(arr["adv"], arr["se"], arr["value"], arr["half1"], arr["half2"],
                      np.asarray(turn_N, np.int64), np.asarray(episode_N, np.int64))  # fmt: skip
    return base, truth, time.perf_counter() - t0, 0.0, int(base[0].meta["mc_truth"].get("branches", 0))


def measure_accuracy(
    env_id: str | Sequence[Any],
    policy: Any = "scripted",
    *,
    episodes: int = 128,
    group_size: int = 8,
    branches: int = 16,
    estimators: Sequence[str] | None = None,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    gamma: float = 1.0,
    epsilon: float = 0.4,
    history: Any = None,
    max_context_tokens: int | None = None,
    save_episodes: str | None = None,
    truth_from: str | None = None,
    critic: CriticSettings | None = None,
    progress: bool = False,
    sampling: Sampling | None = None,
) -> AccuracyReport:
    """Measure every estimator in `estimators` (None: all of `creditgym.credit.ESTIMATORS`) against
    Monte-Carlo truth on `episodes` base episodes (rounded up to whole groups of `group_size`).

    `env_id`: a registered id (resolve `FILE.py:ID` with `creditgym.sources.import_env_source` first) or a list
    of env constructors. `policy`: "scripted" (the env's ScriptedPolicy at action noise `epsilon`),
    a model directory / known model name, or a Policy object. `branches`: M replay branches forked
    before every turn of every base episode for the truth (M >= 2). `gamma` discounts the truth.
    `history` and `max_context_tokens` go to the Collector (None: the env's history, the policy's context).
    Estimators that need probes or a critic need a model policy, and are listed as skipped with the
    reason under a scripted one. A critic estimator gets the critic its trainer fits (`accuracy_critic`),
    fitted on `critic.episodes` held-out episodes of the same policy (None: as many as the base
    episodes; `critic` None: `CriticSettings()`), reported as the row's `critic_episodes`. `save_episodes`:
    a RolloutStore path the base episodes are written to with their truth (`meta["mc_truth"]`, per turn
    `adv`, `se`, `value`, the two half-truths and `branches`), which `creditgym view` shows beside each
    estimate. `truth_from`: such a file; its episodes and truth are reused instead of collected
    (seconds instead of minutes), their env annotations (`abstract_state`, `state_key`) recomputed by
    replaying each episode's actions in the env built from `env_id` and `env_kwargs`, so a new
    abstraction or estimator is measured against the same truth (`reannotate`). `progress`: a rich
    progress bar per collection (base, truth branches, each estimator's own rollouts). `sampling`: a
    model policy's decoding (None: the Collector's, temperature 1 and 256 new tokens per action).
    """
    if branches < 2:
        raise ValueError(f"branches must be >= 2 (the truth's error and noise ceiling need two halves), got {branches}")
    names = list(ESTIMATORS) if estimators is None else list(estimators)
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown:
        raise KeyError(f"unknown estimator(s) {unknown}; registered: {sorted(ESTIMATORS)}")
    label_env = env_id if isinstance(env_id, str) else "env_fns"
    pol, label, is_model = resolve_policy(policy, label_env, epsilon, seed)
    needs_of = {n: dict(getattr(ESTIMATORS[n], "needs", {}) or {}) for n in names}
    has_network = critic_backbone(pol) is not None
    skipped = {n: _skip_reason(needs_of[n], is_model, has_network) for n in names}
    critic = critic or CriticSettings()
    greedy = any(needs_of[n].get("greedy") for n in names if skipped[n] is None)
    num_groups = max(1, math.ceil(episodes / group_size))
    collector = Collector(pol, env_id, group_size=group_size, env_kwargs=env_kwargs, greedy_baseline=greedy,
                          history=history, max_context_tokens=max_context_tokens, progress=progress,
                          sampling=sampling)  # fmt: skip
    try:
        if truth_from:
            base, truth, base_s, truth_s, branches = _load_truth(truth_from, env_id, env_kwargs)
            if not all("greedy_return" in e.meta for e in base):  # greedy rollouts belong to the base collection
                skipped.update({n: "needs greedy rollouts collected with the base episodes: measure it without --truth"
                                for n in names if skipped[n] is None and needs_of[n].get("greedy")})  # fmt: skip
        else:
            base, truth, base_s, truth_s = _collect_truth(collector, num_groups, seed, branches, gamma)
        if save_episodes:
            RolloutStore(save_episodes).extend(
                dataclasses.replace(ep, meta={**ep.meta, "mc_truth": {
                    "adv": truth.adv_N[truth.episode_N == b].tolist(), "se": truth.se_N[truth.episode_N == b].tolist(),
                    "value": truth.value_N[truth.episode_N == b].tolist(), "half1": truth.half1_N[truth.episode_N == b].tolist(),
                    "half2": truth.half2_N[truth.episode_N == b].tolist(), "branches": branches}})
                for b, ep in enumerate(base)
            )  # fmt: skip
        rows = []
        metadata: dict[str, Any] | None = None
        fitset = None
        if any(skipped[n] is None and needs_of[n].get("values") == "critic" for n in names):
            fitset = collect_critic_set(pol, env_id, critic, len(base), group_size, seed, env_kwargs, history,
                                        max_context_tokens, progress, sampling)  # fmt: skip
        for name in names:
            if skipped[name] is not None:
                rows.append(EstimatorRow(name=name, skipped=skipped[name]))
                continue
            if needs_of[name].get("probe") and metadata is None:
                metadata = _env_metadata(env_id, env_kwargs)
            try:
                rows.append(_run_estimator(name, collector, base, truth, base_s, num_groups if greedy else 0, metadata,
                                           fitset, progress))  # fmt: skip
            except (ValueError, TypeError, KeyError, RuntimeError) as e:  # one estimator's failure is a row, not a crash
                log.warning("accuracy: estimator %r failed: %s", name, e)
                rows.append(EstimatorRow(name=name, skipped=f"failed: {type(e).__name__}: {e}"))
    finally:
        collector.close()
    summary = TruthSummary(
        branches=branches,
        turns=len(truth.adv_N),
        base_episodes=len(base),
        mean_turns=len(truth.adv_N) / len(base),
        mean_abs_adv=float(np.abs(truth.adv_N).mean()),
        mean_se=float(truth.se_N.mean()),
        frac_sure=float((np.abs(truth.adv_N) > 2 * truth.se_N).mean()),
        ceiling_spearman=_ceiling(truth, rank=True),
        ceiling_pearson=_ceiling(truth, rank=False),
        episodes=0 if truth_from else len(truth.adv_N) * branches,
        wall_s=truth_s,
    )
    config = {"episodes": episodes, "group_size": group_size, "branches": branches, "seed": seed, "gamma": gamma,
              "epsilon": epsilon if policy == "scripted" else None, "env_kwargs": dict(env_kwargs or {}),
              "history": history, "max_context_tokens": max_context_tokens, "truth_from": truth_from,
              "critic": dataclasses.asdict(critic), "sampling": dataclasses.asdict(sampling) if sampling else None}  # fmt: skip
    return AccuracyReport(env_id=label_env, policy=label, config=config, truth=summary, rows=rows)


def main(
    env: str = typer.Argument(..., help="ENV_ID, FILE.py:ID or module:ID"),
    policy: str = typer.Option("scripted", help="'scripted' (the env's noisy expert) or a model directory / name"),
    epsilon: float = typer.Option(0.4, help="scripted expert's action noise (probability of a random action)"),
    episodes: int = typer.Option(128, help="base episodes (whole groups)"),
    group_size: int = typer.Option(8, help="episodes per group (same task and seed)"),
    branches: int = typer.Option(16, help="replay branches per turn for the truth (M)"),
    estimators: str = typer.Option("all", help="comma-separated estimator names, or 'all'"),
    json_out: str = typer.Option("", "--json", help="also write the report as JSON to this path"),
    seed: int = typer.Option(0, help="seed of the base episodes (and of the scripted policy)"),
    env_kwargs: str = typer.Option("{}", help="JSON dict of env constructor kwargs, e.g. '{\"hops\": 3}'"),
    gamma: float = typer.Option(1.0, help="discount of the truth's returns"),
    history: str = typer.Option("", help="Collector history ('full', 'window', 'window:k'); default: the env's"),
    max_context_tokens: int = typer.Option(0, help="context token budget of the Collector (0: the policy's)"),
    save_episodes: str = typer.Option("", help="write the base episodes with their truth to this .jsonl (for `creditgym view`)"),
    truth: str = typer.Option("", help="reuse the episodes and truth of a --save-episodes file (env annotations replayed)"),
    critic_episodes: int = typer.Option(0, help="held-out episodes the critic estimators' critic is fitted on (0: as many as --episodes)"),
    critic_steps: int = typer.Option(400, help="optimizer steps of the critic fit"),
    critic_lr: float = typer.Option(1e-3, help="learning rate of the PPO critic (a copy of the policy's network)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="a progress bar per collection"),
    temperature: float = typer.Option(1.0, help="a model policy's sampling temperature"),
    max_new_tokens: int = typer.Option(256, help="a model policy's new tokens per action"),
) -> None:
    """Measure every credit estimator's turn advantages against Monte-Carlo truth (docs/accuracy.md)."""
    try:
        env_id, kwargs = import_env_source(env), json_object(env_kwargs, example='{"hops": 3}')
        critic = CriticSettings(critic_episodes or None, critic_steps, lr=critic_lr, seed=seed)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    names = None if estimators == "all" else [s.strip() for s in estimators.split(",") if s.strip()]
    report = measure_accuracy(
        env_id, policy, episodes=episodes, group_size=group_size, branches=branches, estimators=names, seed=seed,
        env_kwargs=kwargs, gamma=gamma, epsilon=epsilon, history=history or None,
        max_context_tokens=max_context_tokens or None, save_episodes=save_episodes or None,
        truth_from=truth or None, critic=critic, progress=progress,
        sampling=Sampling(temperature=temperature, max_new_tokens=max_new_tokens),
    )  # fmt: skip
    typer.echo(report.table())
    if json_out:
        with open(json_out, "w") as f:
            f.write(report.to_json() + "\n")
