"""TTRL (arXiv 2504.16084, METHODS.md 3): majority-vote rewards from unlabelled groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _trainer_helpers import build_tiny

from creditgym import Episode, Turn
from creditgym.envs import Outcome, Parsed, Task, TextEnv
from creditgym.trainers.evaluate import maj_at_n, sample_metrics
from creditgym.trainers.rewards import TTRL, extract_answer, majority_vote

VOTE_ENV_ID = "TrainerTestVote-v0"


def _answer_ep(answer: str | None, group: str = "g", *, em: float = 0.0, search_cost: float = 0.0) -> Episode:
    text = f"<think>hm</think><answer>{answer}</answer>" if answer is not None else "I do not know."
    env_answer = em
    turn = Turn(obs_ids=(1,), action_ids=(2,), action_text=text, reward=env_answer + search_cost)
    return Episode(turns=(turn,), group_id=group,
                   outcome={"answer": env_answer, "em": em, "success": em, "search_cost": search_cost})  # fmt: skip


def test_worked_example_majority_label_rewards_and_metrics() -> None:
    answers = ("42", "41", "42", "7", None, "42")
    eps = [_answer_ep(a, em=float(a == "42")) for a in answers]
    out, state = TTRL()(eps, {})
    assert [e.meta["ttrl_label"] for e in out] == ["42"] * 6
    assert [e.total_reward for e in out] == [1, 0, 1, 0, 0, 1]
    assert state["metrics"]["majority_ratio"] == 0.5 and state["metrics"]["no_answer_groups"] == 0
    assert maj_at_n(eps) == 1.0
    assert sample_metrics([eps]) == {"pass@1": 0.5, "maj@6": 1.0}
    assert majority_vote(["a", "b", "a", "b"]) == ("a", 2)  # tie: the first seen
    assert majority_vote(["b", "a", "a", "b"]) == ("b", 2)


def test_vote_replaces_only_the_answer_term_and_normalises_answers() -> None:
    # Two say "The Eiffel Tower." (one paid 1.0 by the env), one "Louvre": the vote pays the majority,
    # keeps the search cost, and a group with no parsable answer pays 0 and is flagged.
    eps = [_answer_ep("The Eiffel Tower.", em=1.0, search_cost=-0.1), _answer_ep("eiffel tower"),
           _answer_ep("Louvre", em=1.0, search_cost=-0.2), _answer_ep(None, group="h"), _answer_ep(None, group="h")]  # fmt: skip
    out, state = TTRL()(eps, {"kept": 1})
    assert [round(e.total_reward, 6) for e in out] == [0.9, 1.0, -0.2, 0.0, 0.0]
    assert extract_answer(eps[0]) == "eiffel tower" and out[2].outcome["answer"] == 0.0
    assert out[0].turns[0].info["env_reward"] == 0.9 and out[2].outcome["em"] == 1.0  # the env's kept for logs
    assert state["kept"] == 1 and state["metrics"]["no_answer_groups"] == 1.0
    assert state["metrics"]["majority_ratio"] == pytest.approx((2 / 3 + 0) / 2)


# ---------------------------------------------------------------------- the gold is never read


class GoldRead(AssertionError):
    pass


class TrapGold:
    """A gold answer that raises on any use while armed (string conversion, comparison, hashing...)."""

    armed = True
    reads = 0

    def __init__(self, value: str):
        self._value = value

    def get(self) -> str:
        TrapGold.reads += 1
        if TrapGold.armed:
            raise GoldRead("the gold answer was read during TTRL training")
        return self._value

    def __str__(self) -> str:
        return self.get()

    def __eq__(self, other: object) -> bool:
        return self.get() == other

    def __hash__(self) -> int:
        return hash(self.get())


class VoteEnv(TextEnv):
    """One turn: the first letter of the reply is the answer, scored against a gold letter only when
    `labeled=True` (the unlabeled split of TTRL pays 0 and reports no success)."""

    metadata = {**TextEnv.metadata, "obs_role": "user", "stop": ()}

    def __init__(self, labeled: bool = True, max_turns: int = 1, split: str = "train", **kw: Any):
        super().__init__(max_turns=max_turns, split=split, **kw)
        self.labeled = labeled

    def _new_task(self, rng: np.random.Generator, options: dict) -> Task:
        n = int(rng.integers(0, 1000))
        self._gold = TrapGold("a")  # kept by the env only, never in Task.gold or in an info dict
        self._reply = ""
        return Task(f"vote/{self.split}/{n}", self.split, prompt="Say a letter.")

    def _first_obs(self) -> str:
        return "Say a letter."

    def _parse(self, action: str) -> Parsed:
        return Parsed("say", {"text": action}, action)

    def _apply(self, parsed: Parsed) -> Outcome:
        self._reply = parsed.args["text"]
        return Outcome("", reward=self._score() if self.labeled else 0.0, terminated=True)

    def _score(self) -> float:
        return float(first_letter_text(self._reply) == self._gold)

    def _state_key(self) -> str:
        return f"turn{self.turn}"

    def _final_components(self) -> dict[str, float]:
        return {"answer": self._score(), "success": self._score()} if self.labeled else {"answer": 0.0}


def first_letter_text(text: str) -> str | None:
    letters = [c.lower() for c in text if c.isalpha()]
    return letters[0] if letters else None


def first_letter(ep: Episode) -> str | None:
    return first_letter_text(ep.turns[-1].action_text) if ep.turns else None


@pytest.fixture(scope="module", autouse=True)
def vote_env() -> None:
    import gymnasium

    if VOTE_ENV_ID not in gymnasium.registry:
        gymnasium.register(VOTE_ENV_ID, entry_point=VoteEnv)


def test_trap_detects_a_read() -> None:
    """The env turns the raise into an internal-error observation, so the read counter is the witness."""
    env = VoteEnv(labeled=True)
    env.reset(seed=0)
    TrapGold.armed, TrapGold.reads = True, 0
    info = env.step("a")[-1]
    assert TrapGold.reads >= 1 and info.get("internal_error") == "GoldRead"


def test_ttrl_trains_on_unlabelled_tasks_without_reading_gold(tiny_cache: Path) -> None:
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig(steps=6, num_groups=2, group_size=8, max_new_tokens=3, lr=3e-3, tensorboard=False, seed=0,
                     env_kwargs={"labeled": False}, dynamic_sampling=True, allow_short_batch=True)  # fmt: skip
    tr = GRPOTrainer(build_tiny(tiny_cache), VOTE_ENV_ID, cfg, reward_transforms=[TTRL(extract=first_letter)])
    TrapGold.armed, TrapGold.reads = True, 0
    tr.train()  # collect -> TTRL -> dynamic sampling -> credit -> update: a gold read would raise
    assert TrapGold.reads == 0
    ratios = [m["reward/TTRL/majority_ratio"] for m in tr.history]
    assert all(0 < r <= 1 for r in ratios)
    assert any(m["reward"] > 0 for m in tr.history)  # the vote paid some episodes
    # evaluation is where gold is read (and only there)
    TrapGold.armed = False
    try:
        from creditgym.trainers.evaluate import evaluate

        res = evaluate(tr.policies["agent"], VOTE_ENV_ID, n_eval=2, samples=4, max_new_tokens=3, split="train")
    finally:
        TrapGold.armed = True
    assert TrapGold.reads > 0 and "pass@1" in res.metrics and "maj@4" in res.metrics


def test_majority_ratio_rises_as_the_policy_follows_its_own_votes(tiny_cache: Path) -> None:
    """The behaviour TTRL relies on: rewarding agreement with the group's majority sharpens the
    policy onto one answer per task (tiny model, large lr so it shows in a few steps)."""
    from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig(steps=8, num_groups=2, group_size=8, max_new_tokens=3, lr=0.1, tensorboard=False, seed=0,
                     env_kwargs={"labeled": False})  # fmt: skip
    tr = GRPOTrainer(build_tiny(tiny_cache), VOTE_ENV_ID, cfg, reward_transforms=[TTRL(extract=first_letter)])
    tr.train()
    ratios = [m["reward/TTRL/majority_ratio"] for m in tr.history]
    assert ratios[0] < 0.5 and sum(ratios[-3:]) / 3 > 0.8, ratios


def test_votes_use_every_sample_and_training_keeps_the_first_ones() -> None:
    eps = [_answer_ep(a, group=g) for g in ("g", "h") for a in ("x", "y", "y", "z")]
    out, _ = TTRL(train=2)(eps, {})
    assert [(e.group_id, e.total_reward) for e in out] == [("g", 0.0), ("g", 1.0), ("h", 0.0), ("h", 1.0)]
    assert [e.meta["ttrl_label"] for e in out] == ["y"] * 4  # voted by all four
    with pytest.raises(ValueError, match="train must be >= 1"):
        TTRL(train=0)
