import gymnasium
import pytest

import creditgym
from creditgym import check_env
from creditgym.registry import describe_env, difficulty_presets, entry_point_string, scripted_functions

from ._envs import CountdownEnv, LeakyEnv, NondeterministicEnv, load_custom_env_example


def test_register_same_entry_point_is_noop_and_conflict_raises():
    creditgym.register("test/Countdown-v0", "tests_core_envs:CountdownEnv")
    creditgym.register("test/Countdown-v0", "tests_core_envs:CountdownEnv")
    with pytest.raises(ValueError, match="already registered"):
        creditgym.register("test/Countdown-v0", "other.module:CountdownEnv")
    assert entry_point_string(CountdownEnv).endswith(":CountdownEnv")


def test_register_with_expert_random_and_difficulties_in_one_call():
    def expert(ctx, rng):
        return "3"

    def random(ctx, rng):
        return str(int(rng.integers(1, 4)))

    creditgym.register("test/CountdownScripted-v0", CountdownEnv, description="countdown", expert=expert, random=random,
                       difficulties={"easy": {"start": 3}})
    assert describe_env("test/CountdownScripted-v0") == "countdown"
    assert scripted_functions("test/CountdownScripted-v0") == (expert, random)
    assert scripted_functions("test/CountdownScripted-v0", role="defender") == (expert, random)  # falls back to the id's
    assert difficulty_presets("test/CountdownScripted-v0") == {"easy": {"start": 3}}
    with pytest.raises(ValueError, match="give both expert= and random="):
        creditgym.register("test/CountdownHalf-v0", CountdownEnv, expert=expert)
    with pytest.raises(KeyError, match="no scripted policy for env 'test/Countdown-v0'"):
        scripted_functions("test/Countdown-v0")


def test_example_env_makes_and_vectorizes():
    load_custom_env_example()
    env = gymnasium.make("GuessNumber-v0")
    obs, info = env.reset(seed=0)
    assert isinstance(obs, str)
    venv = gymnasium.make_vec("GuessNumber-v0", num_envs=2, vectorization_mode="sync")
    obs, info = venv.reset(seed=0)
    assert len(obs) == 2
    venv.close()


def test_checker_passes_example_and_plain_path():
    load_custom_env_example()
    assert check_env("GuessNumber-v0").ok
    assert check_env(CountdownEnv(), n_seeds=3).ok


def test_checker_catches_gold_leak():
    report = check_env(LeakyEnv(), n_seeds=3, strict=False)
    assert not report.ok
    assert [r.name for r in report.failures] == ["no gold leak"]
    with pytest.raises(AssertionError, match="gold answer"):
        check_env(LeakyEnv(), n_seeds=3)


def test_checker_catches_nondeterminism():
    report = check_env(NondeterministicEnv(), n_seeds=3, strict=False)
    assert "determinism" in {r.name for r in report.failures}


def test_checker_skips_determinism_for_nondeterministic_envs():
    env = NondeterministicEnv()
    env.metadata = {**env.metadata, "deterministic": False}
    report = check_env(env, n_seeds=3, strict=False)
    assert report.ok, str(report)
    assert any("skipped" in r.message for r in report.results)
