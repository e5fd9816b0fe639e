"""Self-search family: SSRL (the policy writes its own search results) and ZeroSearch (a simulator
plays the search engine), on the search family's world (ENVS.md section 5)."""

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

__all__ = [
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
