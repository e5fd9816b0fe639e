"""Search family: Search-R1-style multi-hop QA over a generated world (ENVS.md section 2)."""

from typing import Any

from creditgym.envs.search.env import (
    INVALID_MESSAGE,
    PROMPTS,
    SearchEnv,
    contains_answer,
    parse_search_action,
)
from creditgym.envs.search.expert import search_expert, search_random
from creditgym.envs.search.retrievers import BM25Retriever, HttpRetriever, format_search_r1, tokenize
from creditgym.envs.search.rewards import em_format_reward, otc_grpo, otc_grpo_tool, otc_ppo_tool
from creditgym.envs.search.tasks import GENERATOR_VERSION, generate_task, task_from_id
from creditgym.envs.search.world import build_world, shared_world
from creditgym.registry import register

__all__ = [
    "DIFFICULTIES",
    "SEARCH",
    "SEARCH_EASY",
    "search_expert",
    "search_random",
    "GENERATOR_VERSION",
    "INVALID_MESSAGE",
    "PROMPTS",
    "BM25Retriever",
    "HttpRetriever",
    "SearchEnv",
    "build_world",
    "contains_answer",
    "em_format_reward",
    "format_search_r1",
    "generate_task",
    "otc_grpo",
    "otc_grpo_tool",
    "otc_ppo_tool",
    "parse_search_action",
    "shared_world",
    "task_from_id",
    "tokenize",
]

SEARCH = "creditgym/Search-v0"
SEARCH_EASY = "creditgym/SearchEasy-v0"
# label -> env kwargs (ENVS.md "Difficulty"; `creditgym eval --difficulties`)
DIFFICULTIES: dict[str, dict[str, Any]] = {"easy": {"hops": [1, 1], "distractors": 0}, "medium": {"hops": [2, 2]}, "hard": {"hops": [3, 3]}}

register(SEARCH, "creditgym.envs.search:SearchEnv", description="Search-R1 multi-hop QA over a BM25 corpus",
         expert=search_expert, random=search_random, difficulties=DIFFICULTIES)
register(SEARCH_EASY, "creditgym.envs.search:SearchEnv", {"hops": (1, 1), "distractors": 0},
         "one-hop search QA without distractors (the quickstart env)",
         expert=search_expert, random=search_random, difficulties=DIFFICULTIES)
