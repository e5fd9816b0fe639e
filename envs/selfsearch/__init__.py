"""Self-search family: SSRL (the policy writes its own search results) and ZeroSearch (a simulator
plays the search engine), on the search family's world (ENVS.md section 5)."""

from creditgym.envs.search import search_expert, search_random
from creditgym.envs.selfsearch.expert import (
    inline_oracle,
    inline_random,
    selfsearch_expert,
    selfsearch_random,
)
from creditgym.envs.selfsearch.selfsearch_env import (
    INLINE_PROMPT,
    Responder,
    SearchRequest,
    SelfSearchEnv,
    cut_docs,
)
from creditgym.envs.selfsearch.simsearch_env import (
    SimSearchEnv,
    noise_schedule,
    noisy_documents,
    parse_llm_documents,
)
from creditgym.envs.selfsearch.ssrl import information_spans, ssrl_format_reward, ssrl_reward
from creditgym.envs.selfsearch.tasks import (
    generate_selfsearch_task,
    knowledge_corpus,
    selfsearch_task_from_id,
)
from creditgym.registry import register

__all__ = [
    "SELFSEARCH",
    "SIMSEARCH",
    "inline_oracle",
    "inline_random",
    "selfsearch_expert",
    "selfsearch_random",
    "INLINE_PROMPT",
    "Responder",
    "SearchRequest",
    "SelfSearchEnv",
    "SimSearchEnv",
    "cut_docs",
    "generate_selfsearch_task",
    "information_spans",
    "knowledge_corpus",
    "noise_schedule",
    "noisy_documents",
    "parse_llm_documents",
    "selfsearch_task_from_id",
    "ssrl_format_reward",
    "ssrl_reward",
]

SELFSEARCH = "creditgym/SelfSearch-v0"
SIMSEARCH = "creditgym/SimSearch-v0"

register(SELFSEARCH, "creditgym.envs.selfsearch:SelfSearchEnv", description="SSRL: the policy writes its own search results",
         expert=selfsearch_expert, random=selfsearch_random,
         difficulties={"easy": {"hops": [1, 1]}, "medium": {"hops": [2, 2]}, "hard": {"hops": [3, 3]}})
register(SIMSEARCH, "creditgym.envs.selfsearch:SimSearchEnv", description="ZeroSearch: a simulator plays the search engine",
         expert=search_expert, random=search_random)
