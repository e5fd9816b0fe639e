"""Shared fixtures for the trainer tests: a very small tiny model and hand-built episodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from creditgym import Episode, Turn
from creditgym.envs import Outcome, Parsed, Task, TextEnv

TINY_KW = dict(vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1)


LETTER_ENV_ID = "TrainerTestLetter-v0"


class LetterEnv(TextEnv):
    """Two turns; each reply scores the fraction of its characters that are the letter 'a'."""

    metadata = {**TextEnv.metadata, "obs_role": "user", "stop": ()}

    def __init__(self, max_turns: int = 2, split: str = "train", **kw: Any):
        super().__init__(max_turns=max_turns, split=split, **kw)

    def _new_task(self, rng: np.random.Generator, options: dict) -> Task:
        n = int(rng.integers(0, 1000))
        return Task(f"letter/{self.split}/{n}", self.split, gold=("a",), private={})

    def _first_obs(self) -> str:
        return "Write the letter a."

    def _parse(self, action: str) -> Parsed:
        return Parsed("say", {"text": action}, action)

    def _apply(self, parsed: Parsed) -> Outcome:
        text = parsed.args["text"]
        return Outcome("again", reward=text.count("a") / max(len(text), 1))

    def _state_key(self) -> str:
        return f"turn{self.turn}"

    def _final_components(self) -> dict[str, float]:
        return {"success": float(self.episode_return > 1.0)}


def register_letter_env() -> str:
    import gymnasium

    if LETTER_ENV_ID not in gymnasium.registry:
        gymnasium.register(LETTER_ENV_ID, entry_point=LetterEnv)
    return LETTER_ENV_ID


def build_tiny(cache_dir: Path, seed: int = 0) -> Any:
    from creditgym.agents import tiny

    return tiny.build(seed=seed, cache_dir=cache_dir, env_ids=[], config=tiny.TinyConfig(**TINY_KW))


def clone_policy(policy: Any) -> Any:
    return policy.clone()


def expert_episodes(tokenizer: Any, n: int = 12, group_size: int = 1) -> list[Episode]:
    """Two-turn episodes: a question, a search, a result, an answer; rewards 0 then 1."""
    eps = []
    for i in range(n):
        city = ["Paris", "Rome", "Oslo", "Lima"][i % 4]
        q = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Where is the {city} tower?"}], add_generation_prompt=True, return_dict=False
        )
        a1 = tokenizer.encode(f"<search>{city} tower</search>")
        o2 = tokenizer.encode(f"<information>It is in {city}.</information>")
        a2 = tokenizer.encode(f"<answer>{city}</answer>")
        eps.append(
            Episode(
                turns=(
                    Turn(obs_ids=q, action_ids=a1, action_text=f"<search>{city} tower</search>", state_key=f"{i}:0"),
                    Turn(obs_ids=o2, action_ids=a2, action_text=f"<answer>{city}</answer>", reward=float(i % 2), state_key=f"{i}:1"),
                ),
                task_id=f"t{i // group_size}",
                group_id=f"g{i // group_size}",
                seed=i,
                outcome={"success": float(i % 2)},
            )
        )
    return eps


def params_vector(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])
