import gymnasium
import pytest

import creditgym
from creditgym import check_env
from creditgym.registry import entry_point_string

from ._envs import CountdownEnv, LeakyEnv, NondeterministicEnv, load_custom_env_example


def test_register_same_entry_point_is_noop_and_conflict_raises():
    creditgym.register("test/Countdown-v0", "tests_core_envs:CountdownEnv")
    creditgym.register("test/Countdown-v0", "tests_core_envs:CountdownEnv")
    with pytest.raises(ValueError, match="already registered"):
        creditgym.register("test/Countdown-v0", "other.module:CountdownEnv")
    assert entry_point_string(CountdownEnv).endswith(":CountdownEnv")


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
