"""Self-search family: SSRL format reward and masks, responder contract, ZeroSearch simulation."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import creditgym
from creditgym.agents.scripted import play_episode
from creditgym.envs.parsing import normalize_answer
from creditgym.envs.search import SearchEnv, contains_answer
from creditgym.envs.selfsearch import (
    SearchRequest,
    SelfSearchEnv,
    SimSearchEnv,
    cut_docs,
    generate_selfsearch_task,
    information_spans,
    knowledge_corpus,
    noise_schedule,
    noisy_documents,
    selfsearch_task_from_id,
    ssrl_format_reward,
    ssrl_reward,
)
from creditgym.envs.selfsearch.build_data import DATA_DIR, task_rows
from creditgym.registry import scripted_functions

T, S, I, A = "<think>r</think>", "<search>q</search>", "<information>doc</information>", "<answer>x</answer>"


def play(env, seed, fn, options=None, rng_seed=0):
    res = play_episode(env, fn, seed, options=options, rng=np.random.default_rng(rng_seed))
    return res.info, res.ctx


# ---------------------------------------------------------------- SSRL format reward
def test_ssrl_format_scores_by_hand():
    assert ssrl_format_reward(T + S + I + T + A) == 1.0  # t=2, s=1
    assert ssrl_format_reward(T + S + I + T + T + A) == pytest.approx(2 / 3)  # t=3, s=1
    assert ssrl_format_reward(T + A) == pytest.approx(0.5)  # t=1, s=0: min(1, 1/2) * 1/1
    assert ssrl_format_reward("  \n" + T + S + I + T + S + I + T + A + "\n") == 1.0  # t=3, s=2
    assert ssrl_reward(1.0, 1.0) == pytest.approx(1.0) and ssrl_reward(0.0, 1.0) == pytest.approx(0.1)
    assert ssrl_reward(1.0, 0.0) == pytest.approx(0.9)


@pytest.mark.parametrize(
    "text",
    [
        S + I + T + A,  # does not start with <think>
        T + S + I + T + A + " trailing",  # does not end with </answer>
        T + "<tool>x</tool>" + A,  # a fifth tag
        T + S + I + "<think></think>" + A,  # empty body
        T + "<search>...</search>" + I + T + A,  # placeholder body
        T + "<search>two\nlines</search>" + I + T + A,  # multi-line query
        T + S + T + I + A,  # search not directly followed by information
        T + S + T + A,  # search without information: unequal counts
        T + I + T + A,  # information without search
        T + A + A,  # two answers
        T * 9 + A,  # more than 8 think blocks
        T + "<think>nested <search>q</search></think>" + A,  # nested tags
        T + S + I + T + "<answer>x",  # unclosed
    ],
)
def test_ssrl_format_zero_rules(text):
    assert ssrl_format_reward(text) == 0.0


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), min_size=1, max_size=30), min_size=0, max_size=4))
def test_mask_spans_cover_exactly_the_information_bodies(bodies):
    env = SelfSearchEnv(split="test")
    env.reset(seed=0)
    action = "".join(f"<think>step</think><search>q{i}</search><information>{b}</information>" for i, b in enumerate(bodies))
    action += "<think>done</think><answer>x</answer>"
    *_, info = env.step(action)
    spans = info["mask_spans"]
    assert [action[s:e] for s, e in spans] == bodies
    assert spans == [list(s) for s in information_spans(action)]
    unmasked = "".join(c for i, c in enumerate(action) if not any(s <= i < e for s, e in spans))
    assert "".join(f"<information>{b}</information>" for b in bodies) not in unmasked or not bodies
    assert unmasked.count("<information></information>") == len(bodies)


def test_inline_episode_rewards_and_components():
    env = SelfSearchEnv(split="test")
    obs, info = env.reset(seed=0)
    gold = info["gold"][0]
    obs, r, te, tr, info = env.step(T + S + I + T + f"<answer>{gold}</answer>")
    assert te and obs == "" and r == pytest.approx(1.0)
    comps = info["reward_components"]
    assert comps["em"] == 1.0 and comps["format"] == 1.0 and comps["n_search"] == 1 and comps["success"] == 1.0
    env.reset(seed=0)
    obs, r, te, tr, info = env.step("<think>no answer yet</think>")
    assert info["invalid"] and "<answer>" in obs and not te and info["mask_spans"] == []
    obs, r, te, tr, info = env.step(f"<answer>{gold}</answer>")
    assert te and r == pytest.approx(0.9)  # EM without format


def test_inline_metadata_and_state_key():
    env = gymnasium.make("creditgym/SelfSearch-v0")
    u = env.unwrapped
    assert u.metadata["stop"] == ("</answer>",) and u.metadata["obs_role"] == "continuation"
    assert u.max_turns == 2 and u.metadata["requires_responder"] is False
    obs, info = env.reset(seed=0)
    assert info["state_key"] == f"selfsearch|{info['task_id']}|t=0"


# ---------------------------------------------------------------- tasks and knowledge
def test_knowledge_corpus_and_question_splits():
    docs = list(knowledge_corpus())
    assert len(docs) == 600 and docs[0]["contents"].startswith('"')
    rng = np.random.default_rng(0)
    ids = {s: {generate_selfsearch_task(rng, s).task_id for _ in range(300)} for s in ("train", "test", "heldout")}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["heldout"]) and not (ids["test"] & ids["heldout"])
    for split, group in ids.items():
        for tid in list(group)[:20]:
            assert selfsearch_task_from_id(tid).split == split
    assert any("spouse.born_in" in t or "author.works_for" in t for t in ids["heldout"])
    assert not any("spouse.born_in" in t or "author.works_for" in t for t in ids["train"] | ids["test"])
    with pytest.raises(ValueError):
        selfsearch_task_from_id("selfsearch/test/w0-e0-nonsense")


def test_data_matches_generator():
    from creditgym.envs.search.build_data import gzip_jsonl

    assert (DATA_DIR / "tasks.jsonl.gz").read_bytes() == gzip_jsonl(task_rows()), "rerun python -m creditgym.envs.selfsearch.build_data"


# ---------------------------------------------------------------- responder
def _oracle_responder(calls):
    docs = {d["contents"].split("\n")[0].strip('"'): d["contents"] for d in knowledge_corpus()}

    def respond(reqs):
        calls.extend(reqs)
        out = []
        for r in reqs:
            name = max((k for k in docs if k in r.query), key=len, default=None)
            text = f"Doc 1: {name}. {docs[name].split(chr(10), 1)[1]}" if name else "Doc 1: nothing"
            out.append(text + "\nDoc 2: filler\nDoc 3: more\nDoc 4: cut away")
        return out

    return respond


def test_responder_contract():
    env = gymnasium.make("creditgym/SelfSearch-v0", source="responder", split="test")
    u = env.unwrapped
    assert u.metadata["requires_responder"] is True and u.metadata["stop"] == ("</search>", "</answer>")
    assert type(u).metadata["requires_responder"] is False  # the class default is untouched
    calls: list[SearchRequest] = []
    u.set_responder(_oracle_responder(calls))
    info, ctx = play(env, 0, scripted_functions("creditgym/SelfSearch-v0")[0])
    assert info["reward_components"]["success"] == 1.0
    req = calls[0]
    assert req.task_id.startswith("selfsearch/test/")
    assert req.call_index == 0 and req.query in ctx.action_texts[0] and req.question in ctx.obs_texts[0]
    assert req.question in req.prompt and req.query in req.prompt
    assert all(g not in req.prompt for g in env.unwrapped.task.gold)
    assert "Doc 4" not in ctx.obs_texts[1] and "Doc 3: more" in ctx.obs_texts[1]


def test_responder_replies_are_logged_for_replay():
    calls: list[SearchRequest] = []
    env = SelfSearchEnv(source="responder", split="test")
    env.set_responder(_oracle_responder(calls))
    env.reset(seed=0)
    first = env.step("<search>anything</search>")[0]
    state = env.get_state()
    other = SelfSearchEnv(source="responder", split="test")
    other.set_state(state)  # no responder attached: the log answers
    assert other.render() == first and len(calls) == 1


def test_no_responder_and_bad_responder():
    env = SelfSearchEnv(source="responder", split="test")
    env.reset(seed=0)
    obs, r, te, tr, info = env.step("<search>q</search>")
    assert obs == "\n\n<information>Search unavailable: no responder attached.</information>\n\n"
    assert info["backend_error"] == "no_responder" and not info["invalid"]
    env.set_responder(lambda reqs: ["a", "b"])
    obs, r, te, tr, info = env.step("<search>q</search>")
    assert info["backend_error"] == "bad_response"


def test_cut_docs():
    assert cut_docs("intro\nDoc 1: a\nDoc 2: b\nDoc 3: c", 2) == "intro\nDoc 1: a\nDoc 2: b"


# ---------------------------------------------------------------- SimSearch
def test_noise_schedule_by_hand():
    assert noise_schedule(100, 0.0, 0.5, 4.0, 200) == pytest.approx(0.5 / 3, abs=1e-4)  # 0.1667
    assert noise_schedule(0, 0.0, 0.5) == 0.0 and noise_schedule(200, 0.0, 0.5) == pytest.approx(0.5)
    assert noise_schedule(10_000, 0.1, 0.5) == pytest.approx(0.5)


def test_noise_prob_from_training_step_and_options():
    env = gymnasium.make("creditgym/SimSearch-v0")
    env.unwrapped.training_step = 100
    _, info = env.reset(seed=0)
    assert info["noise_prob"] == pytest.approx(0.5 / 3, abs=1e-4)
    _, info = env.reset(seed=0, options={"noise_prob": 1.0})
    assert info["noise_prob"] == 1.0
    obs, r, te, tr, info = env.step("<search>anything founder</search>")
    assert info["noisy"] is True


def test_noisy_documents_never_hold_gold():
    env = SimSearchEnv(split="test", noise=(1.0, 1.0))
    rng = np.random.default_rng(0)
    for seed in range(30):
        env.reset(seed=seed)
        task = env.task
        world = task.private["world"]
        chain = task.private["chain"]
        queries = [f"{world.entities[i].name} founder born" for i in chain.entities] + [task.prompt, task.gold[0]]
        for q in queries:
            docs = noisy_documents(world, q, task.gold, 5, rng)
            assert len(docs) >= 1
            assert not any(contains_answer(d["contents"], task.gold) for d in docs)
            assert all(normalize_answer(g) not in normalize_answer(d["contents"]) for d in docs for g in task.gold)


def test_one_task_id_same_question_under_all_sources(tmp_path):
    tid = SearchEnv(split="test").reset(seed=3)[1]["task_id"]
    questions = set()
    for env in (SearchEnv(split="test"), SimSearchEnv(split="test"), SimSearchEnv(split="test", source="retriever"),
                SimSearchEnv(split="test", source="llm", llm_url="http://127.0.0.1:9/v1", llm_model="m")):
        obs, info = env.reset(options={"task_id": tid})
        assert info["task_id"] == tid
        questions.add(obs.rsplit("Question:", 1)[1])
    assert len(questions) == 1
    # and the same seed gives the same task as Search-v0
    assert SimSearchEnv(split="test").reset(seed=3)[1]["task_id"] == tid


def test_retriever_source_renders_zerosearch_and_search_r1():
    env = SimSearchEnv(split="test", source="retriever")
    env.reset(seed=0)
    obs, *_ = env.step("<search>Ferbreithga Works headquarters</search>")
    assert obs.startswith("\n\n<information>Doc 1: Ferbreithga Works. ")
    env = SimSearchEnv(split="test", source="template", doc_format="search_r1", noise=(0.0, 0.0))
    env.reset(seed=0)
    obs, *_ = env.step("<search>Ferbreithga Works headquarters</search>")
    assert obs.startswith('\n\n<information>Doc 1(Title: "Ferbreithga Works")')


@pytest.mark.parametrize("env_id, kwargs", [
    ("creditgym/SelfSearch-v0", {}), ("creditgym/SimSearch-v0", {}),
    ("creditgym/SelfSearch-v0", {"source": "responder"}),
    ("creditgym/SimSearch-v0", {"noise": (0.5, 0.5), "doc_format": "search_r1"}),
    ("creditgym/SimSearch-v0", {"source": "retriever"}),
])
def test_check_env(env_id, kwargs):
    env = gymnasium.make(env_id, **kwargs) if kwargs else env_id
    assert creditgym.check_env(env).ok


@pytest.mark.parametrize("p, hops, target", [(0.0, (1, 3), 0.95), (0.5, (1, 3), 0.7), (0.5, (1, 1), 0.9)])
def test_simsearch_expert(p, hops, target):
    env = SimSearchEnv(split="test", hops=hops)
    expert = scripted_functions("creditgym/SimSearch-v0")[0]
    wins = [play(env, s, expert, options={"noise_prob": p})[0]["reward_components"]["success"] for s in range(40)]
    assert np.mean(wins) >= target


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_simsearch_random_ceiling(p):
    env = SimSearchEnv(split="test")
    rand = scripted_functions("creditgym/SimSearch-v0")[1]
    wins = [play(env, s, rand, options={"noise_prob": p}, rng_seed=s)[0]["reward_components"]["success"] for s in range(40)]
    assert np.mean(wins) <= 0.05


def test_inline_oracle_and_random():
    env = SelfSearchEnv(split="test")
    expert, rand = scripted_functions("creditgym/SelfSearch-v0")
    for s in range(20):
        info, ctx = play(env, s, expert)
        comps = info["reward_components"]
        assert comps["success"] == 1.0 and comps["format"] == 1.0 and comps["return"] == pytest.approx(1.0)
        spans = info["mask_spans"]
        assert len(spans) == comps["n_search"] >= 1
    wins = [play(env, s, rand, rng_seed=s)[0]["reward_components"]["success"] for s in range(40)]
    assert np.mean(wins) <= 0.05


def test_tasks_path_for_real_runs(tmp_path):
    import json

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "Who wrote Hamlet?", "golden_answers": ["William Shakespeare"]}) + "\n")
    env = SelfSearchEnv(tasks_path=str(path))
    obs, info = env.reset(seed=0)
    assert info["task_id"].startswith("selfsearch/train/file-0-") and "Who wrote Hamlet?" in obs
    assert env.reset(options={"task_id": info["task_id"]})[1]["task_id"] == info["task_id"]
    obs, r, te, tr, info = env.step(T + S + I + T + "<answer>william shakespeare</answer>")
    assert r == pytest.approx(1.0)
    with pytest.raises(ValueError, match="tasks_path id"):
        env.reset(options={"task_id": "selfsearch/train/bogus"})


def test_frozen_search_tasks_replay():
    from creditgym.envs.search.build_data import frozen_tasks

    rows = frozen_tasks("test")
    assert len(rows) == 500
    env = SimSearchEnv(split="test")
    obs, info = env.reset(options={"task_id": rows[0]["task_id"]})
    assert rows[0]["question"] in obs and info["gold"] == rows[0]["golden_answers"]
