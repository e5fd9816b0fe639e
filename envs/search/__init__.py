"""Search family: Search-R1-style multi-hop QA over a generated world (ENVS.md section 2)."""

from creditgym.envs.search.env import (
    INVALID_MESSAGE,
    PROMPTS,
    SearchEnv,
    contains_answer,
    parse_search_action,
)
from creditgym.envs.search.retrievers import BM25Retriever, HttpRetriever, format_search_r1, tokenize
from creditgym.envs.search.rewards import em_format_reward, otc_grpo, otc_grpo_tool, otc_ppo_tool
from creditgym.envs.search.tasks import GENERATOR_VERSION, generate_task, task_from_id
from creditgym.envs.search.world import build_world, shared_world

__all__ = [
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
