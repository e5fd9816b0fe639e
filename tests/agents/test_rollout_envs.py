"""Exact token accounting on every registered creditgym env, with the byte-level, tiny and SmolLM2
tokenizers: the packed ids are exactly what the policy saw and sampled, and observation tokens get
loss_mask 0. Families land over time: ids whose family is not importable yet are skipped."""

from __future__ import annotations

from typing import Any

import creditgym_test_rollout_fakes as F  # loaded by tests/agents/conftest.py
import gymnasium
import pytest

from creditgym import CreditBatch
from creditgym.agents import Collector, Generation, RandomPolicy, Sampling, ScriptedPolicy

ENV_IDS = sorted(k for k in gymnasium.registry if k.startswith("creditgym/")) + ["GuessNumber-v0"]


class FixedDocs:
    """A responder that writes one short document (any tokenizer: only text leaves it)."""

    tokenizer = F.ByteTokenizer()

    def generate(self, contexts, sampling):
        return [Generation((65,), (0.0,), "Doc 1: nothing relevant.") for _ in contexts]


def _make_env_or_skip(env_id: str) -> Any:
    try:
        env = gymnasium.make(env_id)
        env.reset(seed=0)
    except (ImportError, AttributeError, NotImplementedError) as e:
        pytest.skip(f"{env_id}: family not available yet ({type(e).__name__}: {e})")
    return env


def _policy(env_id: str, tokenizer: Any, role: str | None = None, kind: str = "expert") -> Any:
    try:
        cls = ScriptedPolicy if kind == "expert" else RandomPolicy
        return cls.for_env(env_id, tokenizer=tokenizer, role=role)
    except (KeyError, ImportError):
        return None


_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(name: str) -> Any:
    if name not in _TOKENIZERS:
        if name == "byte":
            _TOKENIZERS[name] = None
        elif name == "tiny":
            from creditgym.agents import tiny

            _TOKENIZERS[name] = tiny.build(seed=0).tokenizer
        else:
            pretrained = pytest.importorskip("creditgym.agents.pretrained")
            try:
                from transformers import AutoTokenizer

                d = pretrained.cached_dir("smollm2-135m-instruct")
                if (d / "tokenizer_config.json").exists():
                    _TOKENIZERS[name] = AutoTokenizer.from_pretrained(str(d))
                else:
                    path = pretrained.gguf_path("smollm2-135m-instruct")
                    _TOKENIZERS[name] = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            except ImportError as e:
                pytest.skip(f"SmolLM2 not installed: {e}")
    return _TOKENIZERS[name]


@pytest.mark.parametrize("tok_name", ["byte", "tiny", "smollm2"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_exact_token_accounting(env_id, tok_name):
    env = _make_env_or_skip(env_id)
    two_player = "SelfPlay" in env_id
    tok = _tokenizer(tok_name)
    kw: dict[str, Any] = {"group_size": 2, "sampling": Sampling(max_new_tokens=64), "max_context_tokens": 8192}
    if env.unwrapped.metadata.get("requires_responder"):
        kw["responder_policy"] = FixedDocs()
    recs: dict[str, Any] = {}
    if two_player:
        for role in ("attacker", "defender"):
            p = _policy(env_id, tok, role)
            if p is None:
                pytest.skip(f"{env_id}: no scripted policy for {role}")
            recs[role] = F.Recording(p)
        col = Collector(policies=recs, env_id=env_id, **kw)
    else:
        expert, rnd = _policy(env_id, tok), _policy(env_id, tok, kind="random")
        if expert is None:
            pytest.skip(f"{env_id}: no scripted policy registered yet")
        recs["expert"], recs["random"] = F.Recording(expert), F.Recording(rnd)
    episodes = []
    if two_player:
        episodes = col.collect(1, seed=0)
    else:
        episodes += Collector(recs["expert"], env_id, **kw).collect(1, seed=0)
        episodes += Collector(recs["random"], env_id, **{**kw, "group_size": 1}).collect(2, seed=1)
    calls = [c for r in recs.values() for c in r.calls]
    contexts = {}
    for ids, gen, sampling, _ in calls:
        contexts.setdefault(tuple(ids), []).append(tuple(gen.token_ids))
        assert set(env.unwrapped.metadata.get("stop", ())) <= set(sampling.stop)
    for ep in episodes:
        ctx: list[int] = []
        for t in ep.turns:
            ctx = list(t.obs_ids) if ep.per_turn_rows else ctx + list(t.obs_ids)  # a per-turn history: a fresh prompt
            assert t.action_ids in contexts.get(tuple(ctx), []), f"{env_id}: turn context/action not what the policy saw"
            ctx += t.action_ids
    batch = CreditBatch.from_episodes(episodes)
    assert batch.row_episode_R is not None and batch.ids_RT is not None and batch.attention_mask_RT is not None
    for b, ep in enumerate(episodes):
        row = [i for t in ep.turns for i in (*t.obs_ids, *t.action_ids)] + list(ep.final_obs_ids)
        n = int(batch.attention_mask_BT[b].sum())
        assert batch.ids_BT[b, :n].tolist() == row
        assert not batch.loss_mask_BT[b, :n][batch.token_turn_BT[b, :n] < 0].any()
        assert ep.terminated != ep.truncated
        # the trainer's rows: exactly the sequences the policy saw and sampled
        rows = [r for r in range(batch.R) if int(batch.row_episode_R[r]) == b]
        want = [[*t.obs_ids, *t.action_ids] for t in ep.turns] if ep.per_turn_rows else [row]
        got = [batch.ids_RT[r, : int(batch.attention_mask_RT[r].sum())].tolist() for r in rows]
        assert got == want
