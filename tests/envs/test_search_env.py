"""Search family: parser, scoring, rewards, OTC, tasks, splits, data, BM25 determinism, checker."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import subprocess
import sys

import gymnasium
import numpy as np
import pytest

import creditgym
from creditgym.agents.base import Context
from creditgym.agents.scripted import play_episode
from creditgym.envs.base import Invalid, Parsed
from creditgym.envs.search import (
    INVALID_MESSAGE,
    SearchEnv,
    em_format_reward,
    generate_task,
    otc_grpo,
    otc_grpo_tool,
    otc_ppo_tool,
    parse_search_action,
    task_from_id,
)
from creditgym.envs.search.build_data import DATA_DIR, gzip_jsonl, task_rows, world_rows
from creditgym.envs.search.retrievers import bm25_for_world, format_search_r1, tokenize
from creditgym.envs.search.rewards import is_well_formed_reply
from creditgym.envs.search.tasks import HELDOUT_COMPOSITIONS, shared_ranks
from creditgym.registry import scripted_functions
from creditgym.trajectory import Episode, Turn

THINK = "<think>t</think>"


def play(env, seed, fn, options=None, rng_seed=0):
    res = play_episode(env, fn, seed, options=options, rng=np.random.default_rng(rng_seed))
    return res.info, res.ctx


# ---------------------------------------------------------------- parser
@pytest.mark.parametrize(
    "action, kind, text",
    [
        ("<search>a</search><answer>b</answer>", "search", "a"),  # first block wins
        ("<answer>b</answer><search>a</search>", "answer", "b"),
        ("<think>x</think>\n<search>  two\n words </search> trailing", "search", "two words"),
        ("<search><answer>x</answer></search>", "search", "<answer>x</answer>"),  # nested: outer block first
        ("<answer>x</answer", None, None),  # unclosed
        ("<search></search>", None, None),  # empty
        ("<search>  \n </search>", None, None),
        ("<SEARCH>x</SEARCH>", None, None),  # case-sensitive
        ("", None, None),
    ],
)
def test_parse_cases(action, kind, text):
    out = parse_search_action(action)
    if kind is None:
        assert isinstance(out, Invalid) and out.message == INVALID_MESSAGE
    else:
        assert isinstance(out, Parsed) and out.kind == kind and out.args["text"] == text


def test_parse_long_query_is_cut_and_huge_nul_surrogate_inputs_do_not_crash():
    assert len(parse_search_action("<search>" + "q" * 2000 + "</search>").args["text"]) == 512
    env = SearchEnv(split="test")
    env.reset(seed=0)
    for a in ["x" * 1_000_000, "<search>a\x00b</search>", "<search>\ud800 q</search>"]:
        obs, r, te, tr, info = env.step(a)
        assert isinstance(obs, str)
    assert info["action_sanitized"] is True and not info["invalid"]


def test_invalid_action_observation_and_penalty():
    env = SearchEnv(split="test", invalid_penalty=-0.5, max_turns=2)
    env.reset(seed=1)
    obs, r, te, tr, info = env.step("no tags here")
    assert obs == INVALID_MESSAGE and r == -0.5 and info["invalid"] and not te and not tr
    obs, r, te, tr, info = env.step("<search></search>")
    assert tr and obs == INVALID_MESSAGE
    comps = info["reward_components"]
    assert comps["n_invalid"] == 2 and comps["invalid"] == -1.0 and comps["return"] == -1.0 and comps["success"] == 0


# ---------------------------------------------------------------- rewards
def test_em_format_cells_by_hand():
    assert em_format_reward(True, True, True) == 1.0
    assert em_format_reward(True, False, True) == 0.8
    assert em_format_reward(False, True, True) == 0.2
    assert em_format_reward(False, False, True) == 0.1
    assert em_format_reward(False, False, False) == 0.0


def test_well_formed_reply_regex():
    assert is_well_formed_reply("<think>a</think>\n<search>q</search>\n")
    assert is_well_formed_reply(" <think>a\nb</think><answer>x</answer>")
    assert not is_well_formed_reply("<search>q</search>")
    assert not is_well_formed_reply("<think>a</think><search>q</search> trailing")
    assert not is_well_formed_reply("<think></think><answer>x</answer>")


def _solve(env, seed, answer_override=None, think=True):
    expert = scripted_functions("creditgym/Search-v0")[0]

    def act(ctx, rng):
        a = expert(ctx, np.random.default_rng(0))
        if "<answer>" in a and answer_override is not None:
            a = f"{THINK}<answer>{answer_override}</answer>"
        return a if think else a.split("</think>\n", 1)[1]

    res = play_episode(env, act, seed)
    return res.rewards[-1], res.components


def test_em_format_in_env():
    env = SearchEnv(split="test", reward="em_format")
    assert _solve(env, 0)[0] == 1.0
    assert _solve(env, 0, think=False)[0] == 0.8
    assert _solve(env, 0, answer_override="wrong")[0] == 0.2


def test_f1_reward_and_components():
    env = SearchEnv(split="test", reward="f1", search_cost=0.1)
    r, comps = _solve(env, 0, answer_override="wrong words entirely")
    assert r == 0.0 and comps["f1"] == 0.0 and comps["em"] == 0.0
    assert comps["search_cost"] == pytest.approx(-0.1 * comps["n_search"])
    assert comps["return"] == pytest.approx(comps["answer"] + comps["search_cost"] + comps["invalid"])
    assert comps["retrieval_hit"] == 1.0  # the expert saw the gold in a result


def test_char_f1_reward_gives_partial_credit_for_a_near_copy():
    env = SearchEnv(split="test", reward="char_f1")
    r_exact, comps = _solve(env, 0)
    assert r_exact == 1.0 and comps["em"] == 1.0
    gold = env.unwrapped.task.gold[0]
    r_near, comps = _solve(env, 0, answer_override=gold[:-2])
    assert 0.0 < r_near < 1.0 and comps["em"] == 0.0 and comps["success"] == 0.0
    with pytest.raises(ValueError, match="char_f1"):
        SearchEnv(reward="chars")


def test_otc_by_hand():
    # METHODS.md section 5, c = 1
    assert [round(otc_ppo_tool(m), 6) for m in range(4)] == [1.0, 0.5, 0.309017, 0.222521]
    assert otc_grpo_tool(2, 1) == pytest.approx(math.sin((4 / 3) * math.pi / 2)) == pytest.approx(0.866025, abs=1e-6)
    assert otc_grpo_tool(1, 1) == pytest.approx(1.0)
    assert otc_grpo_tool(3, 1) == pytest.approx(0.707107, abs=1e-6)
    assert otc_grpo_tool(0, 0) == 1.0
    assert otc_grpo_tool(2, 0) == pytest.approx(0.309017, abs=1e-6)
    assert otc_grpo_tool(4, 2) == pytest.approx(0.866025, abs=1e-6)


def test_otc_ppo_in_env():
    env = SearchEnv(split="test", hops=(2, 2), otc="ppo")
    r, comps = _solve(env, 3)
    assert comps["n_search"] == 2 and r == pytest.approx(otc_ppo_tool(2)) and comps["otc_tool"] == pytest.approx(0.309017, abs=1e-6)


def test_otc_grpo_transform():
    def ep(group, em, m, extra=0.0):
        turns = [Turn(reward=-0.1) for _ in range(m)] + [Turn(reward=em + extra)]
        out = {"em": em, "n_search": m, "answer": em, "return": sum(t.reward for t in turns)}
        return Episode(turns=tuple(turns), group_id=group, outcome=out)

    eps = [ep("g", 1.0, 2), ep("g", 1.0, 1), ep("g", 0.0, 0), ep("h", 0.0, 3), ep("h", 1.0, 2, extra=-0.5)]
    out = otc_grpo(eps)
    # group g: n = 1 -> (2,1) 0.866025, (1,1) 1.0, wrong answer earns 0; group h: n = 2 -> (2,2) = 1
    assert out[0].turns[-1].reward == pytest.approx(0.866025, abs=1e-6)
    assert out[1].turns[-1].reward == pytest.approx(1.0)
    assert out[2].turns[-1].reward == 0.0
    assert out[4].turns[-1].reward == pytest.approx(1.0 - 0.5)  # non-answer terms kept
    assert out[0].outcome["return"] == pytest.approx(-0.2 + 0.866025, abs=1e-6)
    assert out[0].outcome["otc_tool"] == pytest.approx(0.866025, abs=1e-6)
    assert eps[0].turns[-1].reward == 1.0  # inputs untouched


# ---------------------------------------------------------------- tasks and splits
def test_tasks_solvable_and_answers_not_in_question():
    rng = np.random.default_rng(5)
    for split in ("train", "test", "heldout"):
        ranks = shared_ranks({"train": 0, "test": 1, "heldout": 2}[split])
        for _ in range(50):
            t = generate_task(rng, split, hops=(1, 4), distractors=3)
            chain = t.private["chain"]
            assert all(ranks[(i, rel)] < 3 for i, rel in zip(chain.entities, chain.path))
            assert all(t.private["world"].entities[i].lookalikes >= 3 for i in chain.entities)
            assert not any(g.lower() in t.prompt.lower() for g in t.gold)
            assert task_from_id(t.task_id).prompt == t.prompt


def test_episode_corpus_tasks_solvable_and_rebuilt_from_id():
    rng = np.random.default_rng(2)
    for _ in range(5):
        t = generate_task(rng, "test", hops=(2, 3), distractors=2, corpus="episode")
        assert t.split == "test" and task_from_id(t.task_id).gold == t.gold
        env = SearchEnv(split="test", corpus="episode", hops=(2, 3))
        info, _ = play(env, 0, scripted_functions("creditgym/Search-v0")[0], options={"task_id": t.task_id})
        assert info["reward_components"]["success"] == 1.0


def test_splits_disjoint_over_1000_tasks():
    rng = np.random.default_rng(0)
    seen = {}
    for split in ("train", "test", "heldout"):
        tasks = [generate_task(rng, split) for _ in range(1000)]
        assert all(t.task_id.startswith(f"search/{split}/") for t in tasks)
        seen[split] = {t.task_id for t in tasks}
        entities = {t.private["world"].entities[t.private["chain"].start].name for t in tasks}
        seen[split + "_entities"] = entities
        paths = {t.private["chain"].path for t in tasks}
        reserved = [p for p in paths if any(tuple(p[i : i + 2]) in HELDOUT_COMPOSITIONS for i in range(len(p) - 1))]
        assert bool(reserved) == (split == "heldout")
    assert not (seen["train"] & seen["test"]) and not (seen["train"] & seen["heldout"]) and not (seen["test"] & seen["heldout"])
    assert not (seen["train_entities"] & seen["test_entities"])


def test_split_kwarg_and_bad_knobs():
    with pytest.raises(ValueError, match="split"):
        SearchEnv(split="dev")
    with pytest.raises(ValueError, match="reward"):
        SearchEnv(reward="bleu")
    with pytest.raises(ValueError, match="retriever_url"):
        SearchEnv(retriever="http")
    with pytest.raises(ValueError, match="distractors"):
        SearchEnv(distractors=9).reset(seed=0)
    with pytest.raises(ValueError, match="not a search task id"):
        task_from_id("search/test/bogus")
    assert SearchEnv(hops=3).hops == (3, 3) and SearchEnv(hops=[1, 2]).hops == (1, 2)  # an int is an exact hop count
    for bad in ("3", [3], [0, 2], [3, 1]):
        with pytest.raises(ValueError, match="hops must"):
            SearchEnv(hops=bad)


def test_prompt_styles_and_prompt_path(tmp_path):
    p = tmp_path / "prompt.txt"
    p.write_text("Q={question} ({max_turns} replies)")
    obs, _ = SearchEnv(split="test", prompt_path=str(p)).reset(seed=0)
    assert obs.startswith("Q=") and obs.endswith("(6 replies)")
    obs, _ = SearchEnv(split="test", prompt_style="search_r1").reset(seed=0)
    assert "<search>" in obs and "Question:" in obs


def test_observation_framing():
    env = SearchEnv(split="test")
    obs, info = env.reset(seed=0)
    obs, *_ = env.step(f"{THINK}<search>Ferbreithga Works headquarters</search>")
    assert obs.startswith("\n\n<information>Doc 1(Title: \"") and obs.endswith("</information>\n\n")
    assert obs.count("\nDoc ") == 2
    obs, *_ = env.step(f"{THINK}<search>zzzz qqqq</search>")
    assert obs == "\n\n<information>No results.</information>\n\n"
    obs, r, te, tr, info = env.step("<answer>x</answer>")
    assert obs == "" and te


def test_format_search_r1_layout():
    docs = [{"contents": '"Velmora"\nline one\n line two '}, {"contents": '"B"'}]
    assert format_search_r1(docs) == '\n\n<information>Doc 1(Title: "Velmora") line one line two\nDoc 2(Title: "B")</information>\n\n'


def test_tokenizer():
    assert tokenize("Where was the Founder of Velmora_2 born?") == ["founder", "velmora_2", "born"]


# ---------------------------------------------------------------- data and determinism
def test_data_matches_generator():
    for name, rows in (("worlds.jsonl.gz", world_rows()), ("tasks.jsonl.gz", task_rows())):
        assert (DATA_DIR / name).read_bytes() == gzip_jsonl(rows), f"rerun python -m creditgym.envs.search.build_data ({name})"
    total = sum(f.stat().st_size for f in DATA_DIR.iterdir())
    assert total <= 2_000_000


# Bare package stubs skip creditgym/__init__ (which imports torch), so the subprocesses start fast.
_RANK_SCRIPT = """
import hashlib, importlib.util, sys, types
for name in ("creditgym", "creditgym.envs"):
    spec = importlib.util.find_spec(name)
    mod = types.ModuleType(name)
    mod.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = mod
from creditgym.envs.search.retrievers import bm25_for_world
idx = bm25_for_world(1)
qs = ["founder", "born city", "capital country mayor", "works holdings", "published 1850"]
print(hashlib.sha1(repr([idx.ranking(q)[:20] for q in qs]).encode()).hexdigest())
"""


def test_bm25_rankings_equal_under_three_hashseeds():
    qs = ["founder", "born city", "capital country mayor", "works holdings", "published 1850"]
    here = hashlib.sha1(repr([bm25_for_world(1).ranking(q)[:20] for q in qs]).encode()).hexdigest()
    procs = [
        subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONHASHSEED": str(s)})
        for s in (0, 1, 2)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs == [here, here, here]


def test_ties_broken_by_doc_index():
    idx = bm25_for_world(1)
    ranking = idx.ranking("city")
    for (i, s), (j, t) in itertools.pairwise(ranking):
        assert s > t or (s == t and i < j)


# ---------------------------------------------------------------- checker, expert, random
@pytest.mark.parametrize("env_id", ["creditgym/Search-v0", "creditgym/SearchEasy-v0"])
def test_check_env(env_id):
    assert creditgym.check_env(env_id).ok


def test_check_env_episode_corpus_with_costs():
    env = gymnasium.make("creditgym/Search-v0", corpus="episode", reward="em_format", search_cost=0.05, otc="ppo")
    assert creditgym.check_env(env).ok


def test_metadata():
    env = gymnasium.make("creditgym/Search-v0")
    assert env.unwrapped.metadata["obs_role"] == "continuation"
    assert env.unwrapped.metadata["stop"] == ("</search>", "</answer>")


@pytest.mark.parametrize(
    "kwargs, target",
    [({}, 0.95), ({"distractors": 5}, 0.9), ({"hops": (1, 1), "distractors": 0}, 0.95), ({"hops": (4, 4)}, 0.9),
     ({"corpus": "episode"}, 0.9)],
)
def test_expert_success(kwargs, target):
    env = SearchEnv(split="test", **kwargs)
    expert = scripted_functions("creditgym/Search-v0")[0]
    wins = [play(env, s, expert)[0]["reward_components"]["success"] for s in range(40)]
    assert np.mean(wins) >= target


@pytest.mark.parametrize("kwargs", [{}, {"hops": (1, 1), "distractors": 0}])
def test_random_ceiling(kwargs):
    env = SearchEnv(split="test", **kwargs)
    rand = scripted_functions("creditgym/Search-v0")[1]
    wins = [play(env, s, rand, rng_seed=s)[0]["reward_components"]["success"] for s in range(40)]
    assert np.mean(wins) <= 0.05


def test_policies_for_env():
    from creditgym.agents.scripted import RandomPolicy, ScriptedPolicy

    for cls in (ScriptedPolicy, RandomPolicy):
        pol = cls.for_env("creditgym/SearchEasy-v0")
        env = gymnasium.make("creditgym/SearchEasy-v0", split="test")
        obs, _ = env.reset(seed=0)
        from creditgym.agents.base import Sampling

        gen = pol.generate([Context(obs_texts=[obs])], Sampling(stop=("</search>", "</answer>")))[0]
        assert "<search>" in gen.text or "<answer>" in gen.text
