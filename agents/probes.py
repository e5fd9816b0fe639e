"""Probes: per-turn scores of the agent's context, filled by the Collector (CREDIT.md 1.1, 8).

A probe scores the context at every turn boundary of an episode: index 0 before the first action
(`Episode.probe0`), index j >= 1 after turn j-1 *and* the env's reply to it (`Turn.probe` of turn
j-1). Boundary contexts are prefixes of the episode's own token ids (observations and actions are
only ever appended), so a probe needs nothing but the finished Episodes and the policy's
`logprobs(ids_BT, attention_mask_BT, temperature=1.0, grad=False)`; all boundaries of a group are
scored in right-padded batches.

* `GoldAnswerProbe()` (key "gold"): `p = exp(mean_i log pi(a_i | context))` for the gold answer's
  tokens `a` written in the family's answer format (IGPO, arXiv 2510.14967).
* `SIOPProbe()` (key "siop"): self-induced outcome potential without a verifier (arXiv 2605.04984,
  CREDIT.md 8.2): cluster the group's final answers into modes, give each episode its mode's mass
  `q` (stored as `Episode.outcome["siop_q"]`) and the potential `Phi_j = q * log(p_hat_j + 1e-8)`,
  `p_hat_j` the length-normalised probability of the mode's answer after boundary j.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from creditgym.envs.parsing import normalize_answer
from creditgym.trajectory import Episode

__all__ = [
    "DEFAULT_ANSWER_FORMAT",
    "GoldAnswerProbe",
    "SIOPProbe",
    "answer_mean_logprobs",
    "apply_probes",
    "boundaries",
    "episode_ids",
    "extract_answer",
]

log = logging.getLogger(__name__)

DEFAULT_ANSWER_FORMAT = "<answer>{gold}</answer>"

PolicyFor = Callable[[str], Any]


def episode_ids(ep: Episode) -> list[int]:
    """Every token of an episode in order (what `CreditBatch.from_episodes` packs into ids_BT)."""
    out: list[int] = []
    for t in ep.turns:
        out += t.obs_ids
        out += t.action_ids
    return out + list(ep.final_obs_ids)


def boundaries(ep: Episode) -> list[int]:
    """Context lengths at the n+1 probe boundaries: before each action, then after the final observation."""
    out, pos = [], 0
    for t in ep.turns:
        pos += len(t.obs_ids)
        out.append(pos)
        pos += len(t.action_ids)
    out.append(pos + len(ep.final_obs_ids))
    return out


def answer_mean_logprobs(
    policy: Any, contexts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], batch_size: int = 16
) -> list[float]:
    """Mean log-probability of `answers[i]` teacher-forced after `contexts[i]`, batched through
    `policy.logprobs` (right padding; sequences sorted by length to keep padding small)."""
    if len(contexts) != len(answers):
        raise ValueError(f"{len(contexts)} contexts for {len(answers)} answers")
    out = [math.nan] * len(contexts)
    order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]) + len(answers[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        seqs = [list(contexts[i]) + list(answers[i]) for i in idx]
        T = max(len(x) for x in seqs)
        pad = int(getattr(policy.tokenizer, "pad_token_id", None) or 0)
        ids_BT = torch.full((len(seqs), T), pad, dtype=torch.long)
        attn_BT = torch.zeros((len(seqs), T), dtype=torch.long)
        for b, x in enumerate(seqs):
            ids_BT[b, : len(x)] = torch.tensor(x, dtype=torch.long)
            attn_BT[b, : len(x)] = 1
        with torch.no_grad():
            lp_BT = policy.logprobs(ids_BT, attn_BT, temperature=1.0, grad=False).detach().float().cpu()
        for b, i in enumerate(idx):
            start, n = len(contexts[i]), len(answers[i])
            if n == 0 or start == 0:
                raise ValueError("answer_mean_logprobs needs a non-empty context and answer")
            out[i] = float(lp_BT[b, start : start + n].mean())
    return out


def _format_answer(fmt: str, answer: str) -> str:
    return fmt.replace("{gold}", answer)


def extract_answer(text: str, fmt: str = DEFAULT_ANSWER_FORMAT) -> str | None:
    """The last answer written in `fmt` (e.g. `<answer>...</answer>`) in `text`, or None."""
    pre, _, post = fmt.partition("{gold}")
    matches = re.findall(re.escape(pre) + r"(.*?)" + (re.escape(post) if post else r"$"), text, flags=re.DOTALL)
    return matches[-1].strip() if matches else None


def _score_boundaries(
    policy_for: PolicyFor, episodes: Sequence[Episode], answer_text: Sequence[str | None], fmt: str, batch_size: int
) -> list[list[float] | None]:
    """Length-normalised log-probability of each episode's answer text at each of its boundaries."""
    out: list[list[float] | None] = [None] * len(episodes)
    by_role: dict[str, list[int]] = {}
    for i, ep in enumerate(episodes):
        if answer_text[i] is not None:
            by_role.setdefault(ep.role, []).append(i)
    for role, idx in by_role.items():
        policy = policy_for(role)
        ctxs, answers, owners = [], [], []
        for i in idx:
            ep = episodes[i]
            ids = episode_ids(ep)
            ans = list(policy.tokenizer.encode(_format_answer(fmt, str(answer_text[i])), add_special_tokens=False))
            for L in boundaries(ep):
                ctxs.append(ids[:L])
                answers.append(ans)
                owners.append(i)
        scores = answer_mean_logprobs(policy, ctxs, answers, batch_size)
        for i in idx:
            out[i] = []
        for i, s in zip(owners, scores):
            out[i].append(s)  # type: ignore[union-attr]
    return out


def _with_scores(ep: Episode, key: str, values: Sequence[float], outcome: Mapping[str, float] | None = None) -> Episode:
    turns = tuple(dataclasses.replace(t, probe={**t.probe, key: float(v)}) for t, v in zip(ep.turns, values[1:]))
    changes: dict[str, Any] = {"turns": turns, "probe0": {**ep.probe0, key: float(values[0])}}
    if outcome:
        changes["outcome"] = {**ep.outcome, **outcome}
    return dataclasses.replace(ep, **changes)


@dataclasses.dataclass(frozen=True)
class GoldAnswerProbe:
    """Teacher-forced probability of the gold answer (reset `info["gold"]`, kept in `meta["gold"]`)
    after each boundary context: `exp(mean_i log pi(gold_i | context))` (IGPO, arXiv 2510.14967).

    `answer_format` overrides the env's `metadata["answer_format"]` (default `<answer>{gold}</answer>`);
    `gold_index` picks which accepted answer is scored. Episodes without a gold answer get no score."""

    answer_format: str | None = None
    gold_index: int = 0
    batch_size: int = 16
    key: str = "gold"

    def __call__(self, episodes: Sequence[Episode], policy_for: PolicyFor, env_answer_format: str | None = None) -> list[Episode]:
        fmt = self.answer_format or env_answer_format or DEFAULT_ANSWER_FORMAT
        golds: list[str | None] = []
        for ep in episodes:
            gold = ep.meta.get("gold") or ()
            golds.append(str(gold[min(self.gold_index, len(gold) - 1)]) if gold else None)
        if any(g is None for g in golds):
            log.warning("GoldAnswerProbe: %d episode(s) have no gold answer and get no score", golds.count(None))
        scores = _score_boundaries(policy_for, episodes, golds, fmt, self.batch_size)
        return [ep if s is None else _with_scores(ep, self.key, [math.exp(x) for x in s]) for ep, s in zip(episodes, scores)]


@dataclasses.dataclass(frozen=True)
class SIOPProbe:
    """Self-Induced Outcome Potential (arXiv 2605.04984; CREDIT.md 8.2), no verifier, no gold.

    Per group (`group_id`, `role`): each episode's final answer (the last `answer_format` block of its
    last action) is normalised (SQuAD rules) and clustered by equality; mode mass `q` = the mode's
    share of the group's episodes (0 for an episode without an answer). `p_hat_j` =
    `exp(mean_i log pi(answer_i | context_j))` of the mode's most frequent surface form; the stored
    potential is `Phi_j = q * log(p_hat_j + 1e-8)` (key "siop") and `q` goes to `outcome["siop_q"]`.
    Evidence-support reweighting of q (the paper's optional reliability term) is not implemented."""

    answer_format: str | None = None
    batch_size: int = 16
    key: str = "siop"

    def __call__(self, episodes: Sequence[Episode], policy_for: PolicyFor, env_answer_format: str | None = None) -> list[Episode]:
        fmt = self.answer_format or env_answer_format or DEFAULT_ANSWER_FORMAT
        raw = [extract_answer(ep.turns[-1].action_text, fmt) if ep.turns else None for ep in episodes]
        groups: dict[tuple[str, str], list[int]] = {}
        for i, ep in enumerate(episodes):
            groups.setdefault((ep.group_id, ep.role), []).append(i)
        q = [0.0] * len(episodes)
        mode_text: list[str | None] = [None] * len(episodes)
        for idx in groups.values():
            clusters: dict[str, list[int]] = {}
            for i in idx:
                if raw[i] is not None and normalize_answer(str(raw[i])):
                    clusters.setdefault(normalize_answer(str(raw[i])), []).append(i)
            for members in clusters.values():
                forms = [str(raw[i]) for i in members]
                surface = max(sorted(set(forms)), key=forms.count)
                for i in members:
                    q[i] = len(members) / len(idx)
                    mode_text[i] = surface
        scores = _score_boundaries(policy_for, episodes, mode_text, fmt, self.batch_size)
        out = []
        for i, ep in enumerate(episodes):
            s = scores[i]
            phi = [q[i] * math.log(math.exp(x) + 1e-8) for x in s] if s is not None else [0.0] * (ep.num_turns + 1)
            out.append(_with_scores(ep, self.key, phi, {"siop_q": q[i]}))
        return out


def apply_probes(probes: Sequence[Any], episodes: list[Episode], policy_for: PolicyFor, metadata: Mapping[str, Any]) -> list[Episode]:
    """Run each probe over finished episodes (the Collector calls this once per finished group)."""
    fmt = metadata.get("answer_format")
    for probe in probes:
        episodes = probe(episodes, policy_for, fmt)
    return episodes
