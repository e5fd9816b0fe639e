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
