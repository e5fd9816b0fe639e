import pytest

from creditgym.envs import TextEnv, sanitize_action, split_of_key, task_seed

from ._envs import CountdownEnv, EchoBackendEnv, failing_backend, load_custom_env_example


@pytest.fixture
def guess():
    return load_custom_env_example().GuessNumberEnv()


def test_hooks_path_reset_info_and_reseed(guess):
    obs, info = guess.reset(seed=3)
    assert info["task_id"].startswith("guess/train/") and info["turn"] == 0 and info["turns_left"] == 6
    assert info["state_key"] and "gold" in info
    draw1 = guess.np_random.random()
    guess.reset(seed=999, options={"task_id": info["task_id"]})
    assert guess.np_random.random() == draw1  # episode randomness follows the task, not the seed


def test_invalid_action_path_counts_turn_and_penalty():
    env = load_custom_env_example().GuessNumberEnv(max_turns=2, invalid_penalty=-0.5)
    env.reset(seed=0)
    obs, r, te, tr, info = env.step("no tags here")
    assert info["invalid"] is True and r == -0.5 and "<guess>7</guess>" in obs and not (te or tr)
    obs, r, te, tr, info = env.step("")
    assert tr and not te and info["reward_components"] == {"success": 0.0, "return": -1.0}
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("<guess>1</guess>")


def test_sanitize_and_cut():
    s, changed = sanitize_action("a\x00b\ud800c", 100)
    assert s == "a\ufffdb\ufffdc" and changed
    assert sanitize_action("x" * 10, 4) == ("xxxx", True)
    assert sanitize_action("fine", 10) == ("fine", False)
    env = load_custom_env_example().GuessNumberEnv(max_action_chars=50)
    env.reset(seed=0)
    _, _, _, _, info = env.step("\x00" * 100)
    assert info["action_sanitized"] and info["invalid"]


def test_observation_cut_marker():
    env = load_custom_env_example().GuessNumberEnv(max_obs_chars=10)
    obs, _ = env.reset(seed=0)
    assert obs.endswith("chars]") and "…[truncated" in obs
    assert env.observation_space.contains(obs)


def test_plain_gymnasium_path_works():
    env = CountdownEnv()
    obs, info = env.reset(seed=1)
    total, done = 0.0, False
    while not done:
        obs, r, te, tr, info = env.step("1")
        total += r
        done = te or tr
    assert "reward_components" in info and info["reward_components"]["return"] == total
    state = env.get_state()
    assert state["actions"] == ["1"] * info["turn"]


def test_replay_reproduces_episode(guess):
    obs0, info0 = guess.reset(seed=5)
    actions = ["<guess>16</guess>", "oops", "<guess>8</guess>"]
    live = [guess.step(a) for a in actions]
    rep = guess.replay(5, actions)
    assert rep.obs == live[-1][0] and rep.info["state_key"] == live[-1][4]["state_key"]
    assert rep.rewards == tuple(s[1] for s in live)
    with pytest.raises(ValueError, match="past the end"):
        guess.replay(5, ["<guess>1</guess>"] * 10)


def test_get_set_state_round_trip(guess):
    guess.reset(seed=2)
    guess.step("<guess>3</guess>")
    state = guess.get_state()
    nxt = guess.step("<guess>9</guess>")
    guess.set_state(state)
    assert guess.step("<guess>9</guess>")[0] == nxt[0]


def test_backend_log_replays_without_calling_backend():
    env = EchoBackendEnv(backend=lambda t: t.upper())
    env.reset(seed=0)
    out1 = [env.step(a)[0] for a in ["a", "b", "c", "d"]]
    assert env.calls == 4
    env.backend = lambda t: "CHANGED"
    env.reset(seed=0)
    out2 = [env.step(a)[0] for a in ["a", "b", "x", "d"]]
    # the first two come from the log; the branch diverges at "x" and calls live from there on
    assert out2[:2] == out1[:2] and out2[2] == "backend said CHANGED" and out2[3] == "backend said CHANGED"
    assert env.calls == 6
    # the log travels through get_state / reset options
    state = env.get_state()
    fresh = EchoBackendEnv(backend=lambda t: "never")
    fresh.set_state(state)
    assert fresh.calls == 0 and fresh.render() == out2[3]


def test_backend_error_becomes_observation_and_can_raise():
    env = EchoBackendEnv(backend=failing_backend)
    env.reset(seed=0)
    obs, r, te, tr, info = env.step("hi")
    assert info["backend_error"] == "http_503" and info["invalid"] is False and info["turn"] == 1 and obs
    strict = EchoBackendEnv(backend=failing_backend, on_backend_error="raise")
    strict.reset(seed=0)
    with pytest.raises(Exception, match="http_503"):
        strict.step("hi")


def test_hooks_are_not_abstract_and_errors_say_what_to_do():
    env = TextEnv()
    with pytest.raises(NotImplementedError, match="_new_task"):
        env.reset(seed=0)


def test_constructor_validation():
    with pytest.raises(ValueError, match="split"):
        TextEnv(split="validation")
    with pytest.raises(ValueError, match="max_turns"):
        TextEnv(max_turns=0)


def test_split_rule_and_task_seed_are_stable():
    counts = {"train": 0, "test": 0, "heldout": 0}
    for i in range(2000):
        counts[split_of_key(f"k{i}")] += 1
    assert counts["train"] > 1400 and 100 < counts["test"] < 300 and 100 < counts["heldout"] < 300
    assert task_seed("a/b/c") == task_seed("a/b/c") != task_seed("a/b/d")
