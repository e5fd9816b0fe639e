"""Reward transforms: batch functions that rewrite episode rewards between collection and credit.

A transform is any callable `transform(episodes, state) -> (episodes, state)`. It sees one
collection round (whole groups), returns new episodes (frozen dataclasses: never mutated in place)
and its new state, a plain dict the trainer checkpoints so a resumed run continues exactly. Each
rewritten turn keeps its env reward in `Turn.info["env_reward"]` and each episode its env return in
`Episode.meta["env_return"]` (set by `with_turn_reward`, once, so chained transforms keep the
original). A transform reports per-call metrics by putting a `"metrics"` dict of floats in the
returned state; `apply_reward_transforms` takes it out (it is not checkpointed) and logs it as
`reward/<name>/<key>`.

The trainers apply the transforms after collection and before DAPO dynamic sampling, so filtering
reads the transformed rewards (under TTRL nothing downstream reads gold):

    trainer = GRPOTrainer(policy, env_id, GRPOConfig(reward_transforms=["ttrl"]))       # by name
    trainer = GRPOTrainer(policy, env_id, cfg, reward_transforms=[my_transform])          # or objects

Built-in transforms, registered by name in `REWARD_TRANSFORMS` (a factory taking the knobs of
`RLConfig.reward_transform_cfg[name]`): `ttrl` (TTRL majority-vote rewards, arXiv 2504.16084,
METHODS.md 3), `otc_grpo` (OTC-GRPO tool-efficiency rewards, arXiv 2504.14870, METHODS.md 5) and
`novelty` (the red team's novelty bonus for successful attacks, ENVS.md section 6).
Register your own with `@register_reward_transform("name")`.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from creditgym.envs.parsing import first_block, strip_think
from creditgym.envs.redteam.novelty import novelty_bonus
from creditgym.envs.search.rewards import otc_grpo_tool
from creditgym.text import normalize_answer
from creditgym.trajectory import Episode

__all__ = [
    "REWARD_TRANSFORMS",
    "NoveltyBonus",
    "OTCGRPO",
    "RewardTransform",
    "TTRL",
    "apply_reward_transforms",
    "answer_correct",
    "build_reward_transforms",
    "extract_answer",
    "groups_of",
    "majority_vote",
    "register_reward_transform",
    "tool_calls",
    "tool_metrics",
    "with_turn_reward",
]

ENV_REWARD = "env_reward"
"""`Turn.info` key: the env's reward of a turn a transform rewrote."""
ENV_RETURN = "env_return"
"""`Episode.meta` key: the env's return of an episode a transform rewrote."""


@runtime_checkable
class RewardTransform(Protocol):
    """Rewrites the rewards of one collection round; `state` is its own checkpointed dict."""

    def __call__(self, episodes: list[Episode], state: dict[str, Any]) -> tuple[list[Episode], dict[str, Any]]: ...


REWARD_TRANSFORMS: dict[str, Callable[..., RewardTransform]] = {}
"""Name -> factory; `factory(**knobs)` builds the transform (knobs from `reward_transform_cfg`)."""


def register_reward_transform(name: str) -> Callable[[Callable[..., RewardTransform]], Callable[..., RewardTransform]]:
    """Decorator registering a transform factory (a class or a function of keyword knobs) under `name`."""

    def deco(factory: Callable[..., RewardTransform]) -> Callable[..., RewardTransform]:
        if name in REWARD_TRANSFORMS and REWARD_TRANSFORMS[name] is not factory:
            raise ValueError(f"reward transform {name!r} is already registered; pick another name")
        REWARD_TRANSFORMS[name] = factory
        return factory

    return deco


def build_reward_transforms(
    names: Sequence[str], cfg: Mapping[str, Mapping[str, Any]] | None = None
) -> list[tuple[str, RewardTransform]]:
    """`(name, transform)` for each registered name, built with the knobs `cfg[name]`."""
    cfg = cfg or {}
    unknown = [n for n in [*names, *cfg] if n not in REWARD_TRANSFORMS]
    if unknown:
        raise KeyError(f"unknown reward transform(s) {unknown}; registered: {sorted(REWARD_TRANSFORMS)}")
    stray = [n for n in cfg if n not in names]
    if stray:
        raise ValueError(f"reward_transform_cfg names {stray}, which reward_transforms does not list; add them or drop the knobs")
    return [(n, REWARD_TRANSFORMS[n](**dict(cfg.get(n, {})))) for n in names]


def apply_reward_transforms(
    transforms: Sequence[tuple[str, RewardTransform]], episodes: Sequence[Episode], states: list[dict[str, Any]]
) -> tuple[list[Episode], list[dict[str, Any]], dict[str, float]]:
    """Run the transforms in order; returns the episodes, the new states (one per transform) and
    their metrics (`reward/<name>/<key>`)."""
    if len(states) != len(transforms):
        raise ValueError(f"{len(states)} transform states for {len(transforms)} transforms; the checkpoint was "
                         "written with other reward_transforms: resume with the same list")  # fmt: skip
    out = list(episodes)
    new_states: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    for (name, transform), state in zip(transforms, states):
        out, new = transform(out, dict(state))
        new = dict(new)
        for k, v in dict(new.pop("metrics", {})).items():
            metrics[f"reward/{name}/{k}"] = float(v)
        new_states.append(new)
    return out, new_states, metrics


def with_turn_reward(ep: Episode, k: int, reward: float, outcome: Mapping[str, float] | None = None) -> Episode:
    """A copy of `ep` whose turn `k` earns `reward` (the env's reward kept in the turn's
    `info["env_reward"]`, the env's return in `meta["env_return"]`) and whose outcome is updated with
    `outcome`; `outcome["return"]` follows the new rewards when the env reports it."""
    turn = ep.turns[k]
    info = {**turn.info, ENV_REWARD: turn.info.get(ENV_REWARD, turn.reward)}
    turns = (*ep.turns[:k], dataclasses.replace(turn, reward=float(reward), info=info), *ep.turns[k + 1 :])
    new_outcome = {**ep.outcome, **dict(outcome or {})}
    if "return" in ep.outcome:
        new_outcome["return"] = float(sum(t.reward for t in turns))
    meta = {**ep.meta, ENV_RETURN: ep.meta.get(ENV_RETURN, ep.total_reward)}
    return dataclasses.replace(ep, turns=turns, outcome=new_outcome, meta=meta)


def groups_of(episodes: Sequence[Episode]) -> dict[tuple[str, str], list[int]]:
    """Episode indices per `(group_id, role)`, in order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, ep in enumerate(episodes):
        groups.setdefault((ep.group_id, ep.role), []).append(i)
    return groups


# ---------------------------------------------------------------------- TTRL


def extract_answer(ep: Episode) -> str | None:
    """The normalised text of the last turn's `<answer>` block (think blocks ignored), or None."""
    if not ep.turns:
        return None
    block = first_block(strip_think(ep.turns[-1].action_text), "answer")
    if block is None:
        return None
    answer = normalize_answer(block.body)
    return answer or None


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, int]:
    """(most frequent answer, its votes); None answers do not vote; ties go to the answer seen first
    (as `Counter.most_common`). `(None, 0)` when nothing was answered."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None, 0
    label, n = votes.most_common(1)[0]
    return label, n


@register_reward_transform("ttrl")
@dataclasses.dataclass
class TTRL:
    """TTRL ("TTRL: Test-Time Reinforcement Learning", arXiv 2504.16084): each group votes on its
    answers and an episode's answer reward becomes 1 if it agrees with the majority, else 0; the
    other additive terms of its last turn (search cost, invalid penalties) stay. Reads no gold.

    `answer_key` is the outcome entry holding the env's answer term (replaced; 0 when absent). Metrics:
    `majority_ratio` (mean share of the majority in its group), `no_answer_groups`, `single_vote_groups`.
    """

    answer_key: str = "answer"
    """Outcome component of the last turn's reward that the vote replaces (Search and Tools: "answer")."""
    extract: Callable[[Episode], str | None] = extract_answer
    """The episode's normalised final answer (default: the last turn's `<answer>` block)."""
    train: int | None = None
    """Episodes per group kept for training after the vote: the first `train` by index (METHODS.md 3:
    votes 64 / train 32 in the release, 16 / 8 offline); None keeps all."""

    def __post_init__(self) -> None:
        if self.train is not None and self.train < 1:
            raise ValueError(f"ttrl train must be >= 1 episodes per group (or None for all), got {self.train}")

    def __call__(self, episodes: list[Episode], state: dict[str, Any]) -> tuple[list[Episode], dict[str, Any]]:
        out = list(episodes)
        ratios: list[float] = []
        no_answer = single = 0
        for idxs in groups_of(episodes).values():
            answers = [self.extract(episodes[i]) for i in idxs]
            label, n = majority_vote(answers)
            no_answer += label is None
            single += n == 1 and sum(a is not None for a in answers) == 1
            ratios.append(n / len(idxs))
            for i, answer in zip(idxs, answers):
                ep = episodes[i]
                if not ep.turns:
                    continue
                r = float(label is not None and answer == label)
                last = ep.turns[-1]
                env_answer = float(ep.outcome.get(self.answer_key, 0.0))
                reward = last.reward - env_answer + r
                out[i] = with_turn_reward(ep, len(ep.turns) - 1, reward, {self.answer_key: r, "ttrl_reward": r})
                out[i] = dataclasses.replace(out[i], meta={**out[i].meta, "ttrl_label": label, "ttrl_answer": answer})
        if self.train is not None:
            keep = {i for idxs in groups_of(episodes).values() for i in idxs[: self.train]}
            out = [e for i, e in enumerate(out) if i in keep]
        metrics = {"majority_ratio": sum(ratios) / max(len(ratios), 1), "no_answer_groups": float(no_answer),
                   "single_vote_groups": float(single)}  # fmt: skip
        return out, {**state, "metrics": metrics}


# ---------------------------------------------------------------------- OTC-GRPO


def tool_calls(ep: Episode) -> int:
    """The episode's tool calls: `outcome["n_search"]` (Search, SelfSearch) or `outcome["n_calls"]` (Tools)."""
    return int(ep.outcome.get("n_search", ep.outcome.get("n_calls", 0)))


def tool_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """`tool_calls` (mean per episode) and `tool_productivity` (correct answers per tool call over all
    episodes, OTC's metric; 0 calls gives the number of correct answers) for envs that count calls;
    {} for the others."""
    counted = [e for e in episodes if "n_search" in e.outcome or "n_calls" in e.outcome]
    if not counted:
        return {}
    calls = sum(tool_calls(e) for e in counted)
    correct = sum(answer_correct(e) for e in counted)
    return {"tool_calls": calls / len(counted), "tool_productivity": correct / max(calls, 1)}


def answer_correct(ep: Episode) -> float:
    """1.0 for a correct answer: `outcome["em"]` (Search) or `outcome["correct"]` (Tools), else success."""
    for key in ("em", "correct", "success"):
        if key in ep.outcome:
            return 1.0 if float(ep.outcome[key]) >= 1.0 else 0.0
    return 0.0


@register_reward_transform("otc_grpo")
@dataclasses.dataclass
class OTCGRPO:
    """OTC-GRPO ("OTC: Optimal Tool Calls via Reinforcement Learning", arXiv 2504.14870, METHODS.md 5):
    the answer term becomes correct * r_tool(m, n), m the episode's tool calls (`n_search` or `n_calls`),
    n the fewest calls among its group's correct episodes (0, the PPO form, when none is correct); other
    terms are kept, and so is a negative answer term (Tools' `reward="retool"` pays -1 when wrong)."""

    c: float = 1.0
    """Smoothing constant of r_tool (METHODS.md 5: 1.0)."""
    answer_key: str = "answer"
    """Outcome component of the last turn's reward that OTC replaces."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.c) or self.c <= 0:
            raise ValueError(f"otc_grpo needs c > 0, got {self.c}")

    def __call__(self, episodes: list[Episode], state: dict[str, Any]) -> tuple[list[Episode], dict[str, Any]]:
        out = list(episodes)
        tools: list[float] = []
        for idxs in groups_of(episodes).values():
            correct = [tool_calls(episodes[i]) for i in idxs if answer_correct(episodes[i])]
            n = min(correct) if correct else 0
            for i in idxs:
                ep = episodes[i]
                if not ep.turns:
                    continue
                r_tool = otc_grpo_tool(tool_calls(ep), n, self.c)
                env_answer = float(ep.outcome.get(self.answer_key, 0.0))
                # a wrong answer earns nothing, whatever its tool use; a penalty (ReTool's -1) stays
                answer = r_tool if answer_correct(ep) else min(env_answer, 0.0)
                reward = ep.turns[-1].reward - env_answer + answer
                out[i] = with_turn_reward(ep, len(ep.turns) - 1, reward, {self.answer_key: answer, "otc_tool": r_tool})
                tools.append(r_tool)
        return out, {**state, "metrics": {"mean_r_tool": sum(tools) / max(len(tools), 1)}}


# ---------------------------------------------------------------------- novelty bonus (red team)


@register_reward_transform("novelty")
@dataclasses.dataclass
class NoveltyBonus:
    """Novelty bonus for successful attacks (ENVS.md section 6): beta * (1 - max cosine similarity
    of character-3-gram TF-IDF vectors to earlier successes), added to the last turn of each
    successful attacker episode (`outcome["novelty"]` records it). "Earlier" = the archive of past
    rounds' successful attacks, then this round's in order; the archive is the checkpointed state
    (`state["archive"]`, the latest `max_archive` texts)."""

    beta: float = 0.1
    """Bonus scale (ours: 0.1)."""
    success_key: str = "success"
    """Outcome entry that marks a successful attack (>= 1)."""
    max_archive: int = 1024
    """Successful attacks remembered across rounds (the oldest are forgotten first)."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"novelty needs beta >= 0, got {self.beta}")
        if self.max_archive < 0:
            raise ValueError(f"novelty needs max_archive >= 0, got {self.max_archive}")

    def __call__(self, episodes: list[Episode], state: dict[str, Any]) -> tuple[list[Episode], dict[str, Any]]:
        archive = tuple(state.get("archive", ()))
        scored, grown = novelty_bonus(episodes, archive, beta=self.beta, success_key=self.success_key)
        out = list(episodes)
        bonuses = []
        for i, (ep, new) in enumerate(zip(episodes, scored)):
            if new is not ep:  # a successful attack: novelty_bonus returned a new episode
                bonus = float(new.outcome["novelty"])
                out[i] = with_turn_reward(ep, len(ep.turns) - 1, ep.turns[-1].reward + bonus, {"novelty": bonus})
                bonuses.append(bonus)
        keep = list(grown)[-self.max_archive :] if self.max_archive else []
        metrics = {"mean_bonus": sum(bonuses) / max(len(bonuses), 1), "successes": float(len(bonuses)),
                   "archive": float(len(keep))}  # fmt: skip
        return out, {**state, "archive": keep, "metrics": metrics}
