import os
import signal
import subprocess
import sys
import textwrap
import time

from creditgym import Episode, Turn
from creditgym.store import RolloutStore


def _ep(i):
    return Episode(turns=[Turn(obs_ids=[1, 2], action_ids=[i, i + 1], reward=float(i), action_text="a" * 50)], episode_id=f"e{i}")


def test_append_and_read_round_trip(tmp_path):
    store = RolloutStore(tmp_path / "sub" / "eps.jsonl")
    eps = [_ep(i) for i in range(5)]
    store.append(eps[0])
    store.extend(eps[1:])
    assert store.read() == eps and len(store) == 5


def test_torn_last_line_is_skipped_and_next_append_survives(tmp_path, caplog):
    path = tmp_path / "eps.jsonl"
    store = RolloutStore(path)
    store.extend([_ep(0), _ep(1)])
    with open(path, "ab") as f:
        f.write(_ep(2).to_json().encode()[:37])  # a writer killed mid-line
    assert [e.episode_id for e in store.read()] == ["e0", "e1"]
    assert "skipping" in caplog.text
    store.append(_ep(3))  # must start on a fresh line, not glue onto the torn one
    assert [e.episode_id for e in store.read()] == ["e0", "e1", "e3"]


def test_sigkill_mid_stream_keeps_every_complete_episode(tmp_path):
    path = tmp_path / "eps.jsonl"
    script = textwrap.dedent(
        f"""
        import sys
        from creditgym import Episode, Turn
        from creditgym.store import RolloutStore
        store = RolloutStore({str(path)!r})
        i = 0
        while True:
            store.append(Episode(turns=[Turn(action_ids=list(range(200)), reward=float(i))], episode_id=f"e{{i}}"))
            if i == 20:
                print("ready", flush=True)
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    eps = RolloutStore(path).read()
    assert len(eps) >= 21
    assert [e.episode_id for e in eps] == [f"e{i}" for i in range(len(eps))]
    assert all(e.turns[0].action_ids == tuple(range(200)) for e in eps)


# ---------------------------------------------------------------- strict JSON (issue 17)
import json  # noqa: E402
import math  # noqa: E402

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from creditgym.store import decode_episode, encode_episode  # noqa: E402

_any_float = st.floats(allow_nan=True, allow_infinity=True)
_surrogate_text = st.text(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=8)
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), _any_float, _surrogate_text)
_json_value = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "__float__", "__literal__", "__codepoints__", "\ud800"]), inner, max_size=3),
    ),
    max_leaves=6,
)


@st.composite
def _hostile_episodes(draw):
    turns = [
        Turn(
            action_ids=[1, 2],
            action_logprobs=[draw(_any_float), -0.5],
            action_text=draw(_surrogate_text),
            obs_text=draw(_surrogate_text),
            reward=draw(_any_float),
            state_key=draw(_surrogate_text),
            probe={"gold": draw(_any_float)},
            info={"nested": draw(_json_value)},
        )
        for _ in range(draw(st.integers(1, 3)))
    ]
    return Episode(
        turns=turns,
        task_id=draw(_surrogate_text),
        outcome={"success": draw(_any_float), "return": draw(_any_float)},
        probe0={"gold": draw(_any_float)},
        meta={"options": draw(_json_value), "x": draw(_json_value)},
        final_obs_text=draw(_surrogate_text),
    )


def _strict_loads(line: str):
    def refuse(const: str):
        raise ValueError(f"non-standard JSON constant {const}")

    return json.loads(line, parse_constant=refuse)


def _same(a, b) -> bool:
    """Equality that treats NaN as equal to NaN and tells -0.0 from 0.0 (exact round-trip)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@given(st.lists(_hostile_episodes(), min_size=1, max_size=3))
@settings(max_examples=60, deadline=None)
def test_nonfinite_numbers_and_lone_surrogates_round_trip_as_strict_json(tmp_path_factory, episodes):
    path = tmp_path_factory.mktemp("store") / "eps.jsonl"
    RolloutStore(path, fsync=False).extend(episodes)
    raw = path.read_bytes()
    assert raw.isascii()
    for line in raw.decode("ascii").splitlines():
        _strict_loads(line)  # Python's strict reader accepts every line
    back = RolloutStore(path).read()
    assert len(back) == len(episodes)
    for a, b in zip(episodes, back):
        assert _same(a.to_dict(), b.to_dict())


def test_nonfinite_encoding_by_hand():
    ep = Episode(turns=[Turn(action_ids=[1], reward=float("nan"))], outcome={"return": float("-inf")},
                 meta={"probe": {"v": float("inf")}, "user": {"__float__": "nan"}}, task_id="t\ud800")
    line = encode_episode(ep)
    d = _strict_loads(line)
    assert d["turns"][0]["reward"] == {"__float__": "nan"}
    assert d["outcome"] == {"return": {"__float__": "-inf"}}
    assert d["meta"] == {"probe": {"v": {"__float__": "inf"}}, "user": {"__literal__": {"__float__": "nan"}}}
    assert '"task_id":"t\\ud800"' in line
    back = decode_episode(line)
    assert math.isnan(back.turns[0].reward) and back.outcome == {"return": -math.inf}
    assert back.meta == {"probe": {"v": math.inf}, "user": {"__float__": "nan"}} and back.task_id == "t\ud800"


def test_old_lines_written_by_episode_to_json_still_read(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(_ep(1).to_json() + "\n", encoding="utf-8")
    assert RolloutStore(path).read() == [_ep(1)]


def test_encode_refuses_nothing_finite_and_keeps_plain_values_plain():
    line = encode_episode(_ep(2))
    assert "__float__" not in line and decode_episode(line) == _ep(2)
    with pytest.raises(ValueError):
        _strict_loads('{"a": NaN}')


def test_separate_surrogate_code_points_are_not_joined_on_read():
    ep = Episode(turns=[Turn(action_ids=[1], action_text="\ud800\udc00")], final_obs_text="\U00010000")
    back = decode_episode(encode_episode(ep))
    assert back.turns[0].action_text == "\ud800\udc00" and len(back.turns[0].action_text) == 2
    assert back.final_obs_text == "\U00010000"
