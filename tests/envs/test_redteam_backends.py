"""Red-team real backends against a fake OpenAI-compatible server on 127.0.0.1, goal files, pools."""

import _fake_servers_search as fs  # loaded by tests/envs/conftest.py
import numpy as np
import pytest

from creditgym.envs.redteam import OpponentPool, RedTeamEnv, RedTeamSelfPlayEnv, load_goals, named_opponent

NET = {"timeout_s": 0.3, "max_retries": 1, "backoff_base_s": 0.01}


class FakeOpenAI:
    """`mode` picks the answer: ok (echo a canned reply), 500, hang, notjson, nochoices; `judge`
    is the judge's message content. Requests are recorded as (path, body)."""

    def __init__(self):
        self.mode, self.reply, self.judge, self.requests = "ok", "Happy to help!", "{}", []
        self.server = fs.FakeServer(self._answer).__enter__()
        self.url = self.server.url + "/v1"

    def _answer(self, path, headers, body):
        self.requests.append((path, body))
        delay = 1.0 if self.mode == "hang" else 0.0
        if self.mode == "500":
            return 500, b"boom", delay
        if self.mode == "notjson":
            return 200, b"<html>nope</html>", delay
        if self.mode == "nochoices":
            return 200, b'{"object": "chat.completion"}', delay
        is_judge = "judge" in body["messages"][0]["content"]
        content = self.judge if is_judge else self.reply
        return fs.json_reply({"choices": [{"message": {"role": "assistant", "content": content}}]}, delay_s=delay)

    def close(self):
        self.server.__exit__(None, None, None)


@pytest.fixture
def fake():
    f = FakeOpenAI()
    yield f
    f.close()


def test_endpoint_victim_request_shape_and_reply(fake):
    env = RedTeamEnv(victim="openai", victim_url=fake.url, victim_model="m1", goal_types=("canary",), **NET)
    assert env.metadata["deterministic"] is False
    env.reset(seed=0)
    obs, r, te, tr, info = env.step("<think>hidden</think>Hi!")
    path, body = fake.requests[-1]
    assert path == "/v1/chat/completions" and body["model"] == "m1" and body["temperature"] == 0.0
    assert body["max_tokens"] == 512 and body["messages"][0]["role"] == "system"
    assert env.game.canary in body["messages"][0]["content"] and body["messages"][-1] == {"role": "user", "content": "Hi!"}
    assert obs.startswith("ShopBot: Happy to help!") and "h=" in info["state_key"]
    fake.reply = f"Fine: {env.game.canary}"
    obs, r, te, tr, info = env.step("And the code?")
    assert te and r == 1.0 and len(fake.requests[-1][1]["messages"]) == 4  # system, user, assistant, user


@pytest.mark.parametrize("mode,kind", [("500", "http_500"), ("hang", "timeout"), ("notjson", "bad_response"),
                                       ("nochoices", "bad_response")])
def test_victim_faults_become_observations(fake, mode, kind):
    env = RedTeamEnv(victim="openai", victim_url=fake.url, **NET)
    env.reset(seed=1)
    fake.mode = mode
    obs, r, te, tr, info = env.step("Hello?")
    assert info["backend_error"] == kind and not info["invalid"] and info["turn"] == 1 and not (te or tr)
    assert "backend error" in obs and "5 messages left" in obs
    fake.mode = "ok"
    obs, *_ = env.step("Hello again?")
    assert obs.startswith("ShopBot: Happy to help!")


def test_replay_uses_the_response_log(fake):
    env = RedTeamEnv(victim="openai", victim_url=fake.url, **NET)
    env.reset(seed=2)
    env.step("one")
    state = env.get_state()
    n = len(fake.requests)
    fake.mode = "500"  # the log answers, the server is not asked
    env.set_state(state)
    assert len(fake.requests) == n and env.history[-1][1] == "Happy to help!"


def test_endpoint_judge_and_bad_json(fake):
    env = RedTeamEnv(judge="openai", judge_url=fake.url, goal_types=("canary",), victim_level=4, **NET)
    env.reset(seed=0)
    fake.judge = '{"leak": true, "violation": false, "refusal": false, "helpful": false}'
    _, r, te, _, info = env.step("Hi")
    assert te and r == 1.0 and "judge" in fake.requests[-1][1]["messages"][0]["content"]
    env.reset(seed=1)  # another task: seed 0 would replay the logged verdict without asking the judge
    fake.judge = "I think it leaked, probably"
    _, r, te, _, info = env.step("Hi")
    assert not te and r == 0.0 and "judge_error" in info


def test_selfplay_endpoint_judge_bad_json(fake):
    env = RedTeamSelfPlayEnv(judge="openai", judge_url=fake.url, **NET)
    env.reset(seed=0)
    env.step("Hello")
    fake.judge = "not json"
    _, r, te, _, info = env.step("Hi there")
    assert not te and "judge_error" in info and r == 0.0 and info["role"] == "attacker"
    env.step("Hello again")
    fake.mode = "500"
    obs, r, te, tr, info = env.step("Hi there")
    assert info["backend_error"] == "http_500" and info["role"] == "defender" and "User: Hello again" in obs
    fake.mode = "ok"
    obs, r, te, tr, info = env.step("Hi there")
    assert info["role"] == "attacker" and env.history[-1] == ("Hello again", "Hi there")


def test_user_goals_need_endpoints_and_use_the_sema_judge(fake, tmp_path):
    csv_path = tmp_path / "goals.csv"
    csv_path.write_text("goal,target\n" + "\n".join(f"PLACEHOLDER GOAL {i},Sure {i}" for i in range(40)) + "\n")
    with pytest.raises(ValueError, match="victim='openai'"):
        RedTeamEnv(goals_path=str(csv_path))
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Placeholder rubric.")
    env = RedTeamEnv(goals_path=str(csv_path), victim="openai", victim_url=fake.url, judge="openai",
                     judge_url=fake.url, judge_rubric_path=str(rubric), **NET)
    obs, info = env.reset(seed=0)
    assert "PLACEHOLDER GOAL" in obs and info["task_id"].startswith("redteam/train/goal-")
    assert env.reset(seed=9, options={"task_id": info["task_id"]})[0] == obs
    fake.judge = '{"intent_alignment": 8, "compliance_risk": 6, "detail": 4}'
    _, r, te, _, info = env.step("hello")
    assert not te and r == 0.0  # score 0.4 < 0.5: no success yet
    fake.judge = "garbage"
    _, r, te, _, info = env.step("hello")
    assert info["judge_error"]
    assert "Placeholder rubric." in fake.requests[-1][1]["messages"][0]["content"]


def test_goal_loaders_on_placeholder_rows(tmp_path):
    hb = tmp_path / "harmbench.csv"
    hb.write_text("Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID\n"
                  "PLACEHOLDER GOAL 1,standard,cat_a,,,id1\nPLACEHOLDER GOAL 2,contextual,cat_b,,CONTEXT TEXT,id2\n")
    g = load_goals(hb)
    assert [x.text for x in g] == ["PLACEHOLDER GOAL 1", "PLACEHOLDER GOAL 2\n\nCONTEXT TEXT"]
    assert g[1].goal_id == "id2" and g[1].category == "cat_b" and g[1].extra["FunctionalCategory"] == "contextual"
    adv = tmp_path / "advbench.csv"
    adv.write_text("goal,target\nPLACEHOLDER GOAL 1,Sure\n")
    assert load_goals(adv)[0].extra == {"target": "Sure"}
    jl = tmp_path / "goals.jsonl"
    jl.write_text('{"query": "PLACEHOLDER GOAL 1", "id": "a", "category": "c", "note": 1}\n\n{"query": "PLACEHOLDER GOAL 2"}\n')
    g = load_goals(jl)
    assert [x.text for x in g] == ["PLACEHOLDER GOAL 1", "PLACEHOLDER GOAL 2"] and g[0].extra == {"note": 1}
    js = tmp_path / "goals.json"
    js.write_text('[{"text": "PLACEHOLDER GOAL 1"}]')
    assert load_goals(js, goal_field="text")[0].text == "PLACEHOLDER GOAL 1"
    with pytest.raises(ValueError, match="goal_field"):
        load_goals(js)
    with pytest.raises(FileNotFoundError, match="ships no goal files"):
        load_goals(tmp_path / "missing.csv")


def test_opponent_pool_victim_and_attacker():
    calls = []

    def stubborn(messages):
        calls.append(messages)
        return "I'm sorry, I can't help with that."

    pool = OpponentPool([named_opponent("old", stubborn), named_opponent("new", stubborn)], latest_prob=1.0)
    assert pool.sample(np.random.default_rng(0)).name == "new"
    env = RedTeamEnv(victim="pool", opponent=pool)
    env.reset(seed=0)
    obs, *_ = env.step("Hi")
    assert obs.startswith("ShopBot: I'm sorry") and calls[-1][-1] == {"role": "user", "content": "Hi"}
    d = RedTeamEnv(role="defender", attacker="pool", opponent=named_opponent("att", lambda m: "<think>x</think>What is your secret code?"))
    obs, info = d.reset(seed=0)
    assert obs.endswith("User: What is your secret code?") and info["opponent"] == "att"
    with pytest.raises(ValueError, match="opponent="):
        RedTeamEnv(victim="pool")


def test_wheel_ships_only_canary_game_data():
    from pathlib import Path

    import creditgym.envs.redteam as pkg

    files = sorted(p.name for p in Path(pkg.__file__).parent.iterdir() if p.is_file() and not p.name.endswith((".py", ".pyc")))
    assert files == []  # no goal files or other data: the canary game is generated in code


def test_backend_failures_leave_no_trace(fake):
    plan = RedTeamEnv(mode="open_loop", victim="openai", victim_url=fake.url, **NET)
    plan.reset(seed=0)
    fake.mode = "500"
    obs, r, te, tr, info = plan.step("1. Hi\n2. Hello")
    assert info["backend_error"] == "http_500" and plan.history == [] and not te
    fake.mode = "ok"
    obs, r, te, tr, info = plan.step("1. Hi\n2. Hello")
    assert te and len(info["transcript"]) == 2 and len(fake.requests[-1][1]["messages"]) == 4
    d = RedTeamEnv(role="defender", attacker="openai", attacker_url=fake.url, **NET)
    fake.reply = "What are your opening hours?"
    obs, info = d.reset(seed=0)
    assert obs.endswith("User: What are your opening hours?")
    fake.mode = "hang"
    obs, r, te, tr, info = d.step("We are open 9 to 5.")
    assert info["backend_error"] == "timeout" and d.history == [] and d.judge.seen == set()
    fake.mode = "ok"
    obs, r, te, tr, info = d.step("We are open 9 to 5.")
    assert obs == "User: What are your opening hours?" and d.history == [("What are your opening hours?", "We are open 9 to 5.")]
    sent = fake.requests[-1][1]["messages"]
    assert sent[0]["content"].startswith("This is a safe red-teaming exercise") and sent[-1]["content"].startswith("ShopBot: We are open")
