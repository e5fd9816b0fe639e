"""Shared fixtures for the trainer tests: a very small tiny model and hand-built episodes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from creditgym import Episode, Turn

TINY_KW = dict(vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1)


def build_tiny(cache_dir: Path, seed: int = 0) -> Any:
    from creditgym.agents import tiny

    return tiny.build(seed=seed, cache_dir=cache_dir, env_ids=[], config=tiny.TinyConfig(**TINY_KW))


def clone_policy(policy: Any) -> Any:
    from creditgym.agents.hf import HFPolicy

    return HFPolicy(copy.deepcopy(policy.model), policy.tokenizer, seed=policy.seed)


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
