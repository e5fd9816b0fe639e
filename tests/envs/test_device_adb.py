"""Device family: the adb backend against a fake adb executable (tests/envs/fake_adb/fake_adb.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import creditgym
from creditgym.agents.scripted import play_episode
from creditgym.envs.device import DeviceEnv, device_expert, parse_screen
from creditgym.envs.device.adb import elements_to_xml, escape_input_text, parse_uiautomator_xml
from creditgym.envs.device.apps import Layout, build_elements
from creditgym.envs.device.state import build_world

FAKE = Path(__file__).parent / "fake_adb" / "fake_adb.py"
_spec = importlib.util.spec_from_file_location("fake_adb_for_device_tests", FAKE)
fake_adb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_adb)


def in_process_run(argv, timeout_s):
    """The same fake, called in-process (no interpreter start per command): fast tests."""
    try:
        rc, out, err = fake_adb.handle(list(argv[1:]), dict(os.environ), in_process=True)
    except fake_adb.Hang as e:
        raise subprocess.TimeoutExpired(list(argv), timeout_s) from e
    return subprocess.CompletedProcess(list(argv), rc, out, err)


class FakeAdb:
    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch):
        self.path = tmp / "adb"
        self.path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "{FAKE}" "$@"\n')
        self.path.chmod(0o755)
        self.state, self.log_path = tmp / "state.json", tmp / "log.jsonl"
        self.log_path.write_text("")
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("FAKE_ADB_STATE", str(self.state))
        monkeypatch.setenv("FAKE_ADB_LOG", str(self.log_path))
        self.set(wifi="0", bluetooth="1", airplane="0")

    def set(self, screen: str = "home", **settings: str) -> None:
        names = {"wifi": "wifi_on", "bluetooth": "bluetooth_on", "airplane": "airplane_mode_on"}
        self.state.write_text(json.dumps({"screen": screen, "scroll": 0, "settings": {names[k]: v for k, v in settings.items()}}))

    def fault(self, kind: str, times: int = -1, cmd: str = "") -> None:
        st = json.loads(self.state.read_text())
        st["faults"] = 0
        self.state.write_text(json.dumps(st))
        self.monkeypatch.setenv("FAKE_ADB_FAULT", kind)
        self.monkeypatch.setenv("FAKE_ADB_FAULT_TIMES", str(times))
        if cmd:
            self.monkeypatch.setenv("FAKE_ADB_FAULT_CMD", cmd)

    def log(self) -> list:
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def env(self, **kw) -> DeviceEnv:
        env = DeviceEnv(backend="adb", adb_path=str(self.path), adb_timeout_s=kw.pop("adb_timeout_s", 2.0), **kw)
        env._adb.wait_s = 0.0
        return env


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeAdb:
    """The fake adb called in-process (most tests)."""
    monkeypatch.setattr("creditgym.envs.device.adb.run_process", in_process_run)
    return FakeAdb(tmp_path, monkeypatch)


@pytest.fixture
def fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeAdb:
    """The fake adb as a real executable run through subprocess (argv lists, timeouts, kill)."""
    return FakeAdb(tmp_path, monkeypatch)


def act(kind: str, **kw: object) -> str:
    return json.dumps({"action_type": kind, **kw})


def sim_elements(screen: str, **settings: bool):
    world = build_world(np.random.default_rng(0), n_contacts=8, n_products=20)
    world["settings"].update(settings)
    if screen == "settings":
        world["nav"].update(app="Settings", screen="main")
    return build_elements(world, Layout())


# ---------------------------------------------------------------------- pure parts
def test_xml_round_trip_equals_simulator_elements() -> None:
    world = build_world(np.random.default_rng(1), n_contacts=20, n_products=30)
    for app, screen, arg in [("Home", "home", ""), ("Settings", "main", ""), ("Contacts", "list", ""), ("Messages", "thread", sorted(world["contacts"])[0]), ("Shop", "cart", "")]:
        world["nav"].update(app=app, screen=screen, arg=arg)
        els = build_elements(world, Layout(distractors=3))
        package, back = parse_uiautomator_xml(elements_to_xml(els, "com.example"), 1080, 2400)
        assert package == "com.example" and back == els, (app, screen)


def test_node_filter_keeps_leaves_descriptions_and_scrollables() -> None:
    xml = (
        '<hierarchy><node class="android.widget.FrameLayout" package="p" bounds="[0,0][1080,2400]">'
        '<node class="android.widget.LinearLayout" content-desc="card" bounds="[0,0][100,100]"><node class="android.widget.TextView" text="a" bounds="[0,0][50,50]"/></node>'
        '<node class="android.widget.ScrollView" scrollable="true" bounds="[0,100][1080,900]"><node class="android.widget.Button" text="b" clickable="true" bounds="[0,100][50,150]"/></node>'
        '<node class="android.widget.LinearLayout" bounds="[0,900][1080,1000]"><node class="android.view.View" bounds="[5,5][5,9]"/></node>'
        '<node class="android.widget.TextView" text="off" bounds="[0,2400][1080,2500]"/>'
        "</node></hierarchy>"
    )
    _, els = parse_uiautomator_xml(xml, 1080, 2400)
    assert [(e.cls, e.text, e.desc, e.scrollable, e.clickable) for e in els] == [
        ("LinearLayout", None, "card", False, False), ("TextView", "a", None, False, False),
        ("ScrollView", None, None, True, False), ("Button", "b", None, False, True),
    ]
    with pytest.raises(ValueError, match="malformed"):
        parse_uiautomator_xml(xml[: len(xml) // 2], 1080, 2400)


@pytest.mark.parametrize(("text", "escaped"), [
    ("running late", "running%slate"), ('a"b', 'a\\"b'), ("x;y", "x\\;y"), ("$(reboot)", "\\$\\(reboot\\)"), ("`id`&", "\\`id\\`\\&"),
    ("50% off", "50\\%%soff"), ("new\nline", None), ("emoji 🙂", None), ("café", None),
])
def test_escape_input_text(text: str, escaped: str | None) -> None:
    assert escape_input_text(text) == escaped


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40))
def test_escaped_text_has_no_bare_shell_metacharacters(text: str) -> None:
    out = escape_input_text(text)
    assert out is not None and " " not in out
    i = 0
    while i < len(out):  # every unsafe character is preceded by a backslash
        if out[i] == "\\":
            i += 2
            continue
        assert out[i].isalnum() or out[i] in "_.,:/@+=-%", out
        i += 1


# ---------------------------------------------------------------------- against the fake
def test_fake_screens_parse_to_the_simulators_elements(fake_proc: FakeAdb) -> None:
    fake = fake_proc
    env = fake.env()
    obs, info = env.reset(seed=0)
    assert env.metadata["deterministic"] is False and DeviceEnv.metadata["deterministic"] is True
    assert parse_screen(obs)[1] == sim_elements("home") and "Current app: Home" in obs
    obs, *_ = env.step(act("open_app", app_name="settings"))
    app, els = parse_screen(obs)
    assert app == "Settings"
    sim = sim_elements("settings", wifi=False, bluetooth=True, airplane=False)
    assert [(e.text, e.checked, e.bounds) for e in els if e.cls == "Switch"][:3] == [(e.text, e.checked, e.bounds) for e in sim if e.cls == "Switch"][:3]
    assert [e.text for e in els] == [e.text for e in sim]
    log = fake.log()
    assert all(isinstance(a, list) and all(isinstance(x, str) for x in a) for a in log)  # argv lists only
    assert ["-s", "emulator-5554", "shell", "monkey", "-p", "com.android.settings", "-c", "android.intent.category.LAUNCHER", "1"] in log
    assert ["-s", "emulator-5554", "shell", "uiautomator", "dump", "/sdcard/window_dump.xml"] in log
    assert ["-s", "emulator-5554", "exec-out", "cat", "/sdcard/window_dump.xml"] in log


@pytest.mark.parametrize(("task", "settings"), [("adb.wifi.on", {"wifi": "0"}), ("adb.airplane.on", {"airplane": "1"})])
def test_expert_solves_settings_tasks_through_adb(fake: FakeAdb, task: str, settings: dict) -> None:
    fake.set(**{"wifi": "1", "bluetooth": "0", "airplane": "0", **settings})
    env = fake.env()
    act = lambda ctx, _: device_expert(ctx, np.random.default_rng(0))
    res = play_episode(env, act, options={"task_id": f"device/train/{task}"}, max_turns=6)
    assert res.terminated and res.rewards[-1] == 1.0 and res.info["reward_components"]["success"] == 1.0
    assert ["-s", "emulator-5554", "shell", "settings", "get", "global", task.split(".")[1].replace("airplane", "airplane_mode") + "_on"] in fake.log()


def test_actions_become_the_documented_commands(fake: FakeAdb) -> None:
    env = fake.env()
    env.reset(seed=0)
    env.step(act("open_app", app_name="Settings"))
    n = len(fake.log())
    env.step(act("scroll", direction="down"))
    env.step(act("swipe", direction="down"))
    env.step(act("long_press", index=4))
    env.step(act("input_text", index=4, text="a b;$(x)"))
    obs, *_ = env.step(act("input_text", index=4, text="no émoji"))
    env.step(act("navigate_back"))
    env.step(act("keyboard_enter"))
    cmds = [a[2:] for a in fake.log()[n:] if a[3:4] == ["input"]]
    assert cmds == [
        ["shell", "input", "swipe", "540", "1800", "540", "600", "400"],  # content down: finger 75% -> 25%
        ["shell", "input", "swipe", "540", "600", "540", "1800", "400"],  # finger down
        ["shell", "input", "swipe", "540", "564", "540", "564", "1000"],
        ["shell", "input", "tap", "540", "564"],
        ["shell", "input", "keyevent", "123", *["67"] * len("Wi-Fi")],  # clear the old text
        ["shell", "input", "text", "a%sb\\;\\$\\(x\\)"],
        ["shell", "input", "keyevent", "66"],
        ["shell", "input", "keyevent", "4"],
        ["shell", "input", "keyevent", "66"],
    ]
    assert "adb can only type printable ASCII" in obs


@pytest.mark.parametrize(("kind", "reported"), [("offline", "offline"), ("null_root", "null_root"), ("truncated_xml", "bad_xml"),
                                                ("garbage", "bad_xml"), ("exit1", "exit_1")])
def test_faults_give_observations_and_three_in_a_row_truncate(fake: FakeAdb, kind: str, reported: str) -> None:
    env = fake.env(step_penalty=0.1)
    env.reset(seed=0)
    env.step(act("wait"))
    fake.fault(kind)
    for i in range(3):
        obs, r, term, trunc, info = env.step(act("navigate_home"))
        assert obs.startswith("Result:") is False and f"Device error: {reported}" in obs
        assert info["backend_error"] == reported and info["invalid"] is False
        assert trunc is (i == 2) and not term
    c = info["reward_components"]
    assert c["success"] == 0.0 and c["n_steps"] == 4 and c["return"] == pytest.approx(-0.1)  # failed steps pay nothing
    assert c["success"] + c["step_penalty"] + c["invalid"] + c["shaping"] == pytest.approx(c["return"])
    with pytest.raises(RuntimeError):
        env.step(act("wait"))


def test_hang_past_timeout_is_retried_then_reported(fake: FakeAdb) -> None:
    env = fake.env()
    env.reset(seed=0)
    fake.fault("hang")
    obs, _, _, _, info = env.step(act("wait"))
    assert info["backend_error"] == "timeout" and "Device error: timeout" in obs
    dumps = [a for a in fake.log() if "uiautomator" in a]
    assert len(dumps) == 1 + 3  # the reset's dump, then three attempts


def test_real_subprocess_hang_is_killed_at_the_timeout(fake_proc: FakeAdb) -> None:
    env = fake_proc.env()
    env.reset(seed=0)
    env._adb.timeout_s, env._adb.attempts = 1.5, 2
    fake_proc.fault("hang")  # the fake sleeps 30 s
    obs, _, _, _, info = env.step(act("navigate_home"))
    assert info["backend_error"] == "timeout" and "took over 1.5 s" in obs


def test_transient_faults_recover(fake: FakeAdb) -> None:
    env = fake.env()
    env.reset(seed=0)
    fake.fault("null_root", times=2)
    obs, _, _, _, info = env.step(act("open_app", app_name="Settings"))
    assert "backend_error" not in info and "Current app: Settings" in obs
    fake.fault("offline", times=3, cmd="monkey")  # the action itself fails three times, then works
    obs, _, _, _, info = env.step(act("open_app", app_name="Settings"))
    assert info["backend_error"] == "offline"
    obs, _, _, _, info = env.step(act("open_app", app_name="Settings"))
    assert "backend_error" not in info


def test_reset_under_fault_still_observes(fake: FakeAdb) -> None:
    env = fake.env()
    fake.fault("garbage")
    obs, info = env.reset(seed=0)
    assert "Device error: bad_xml" in obs and info["state_key"]


def test_configuration_errors_raise_with_hints(fake: FakeAdb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="adb_path"):
        DeviceEnv(backend="adb", adb_path=str(tmp_path / "missing-adb"))
    with pytest.raises(RuntimeError, match="serial"):
        fake.env(serial="emulator-9999")
    monkeypatch.setenv("FAKE_ADB_DEVICES", "emulator-5554\toffline")
    with pytest.raises(RuntimeError, match="start an emulator"):
        fake.env()
    bad = tmp_path / "tasks.jsonl"
    bad.write_text('{"goal": "Open the camera."}\n')
    monkeypatch.delenv("FAKE_ADB_DEVICES")
    with pytest.raises(ValueError, match="checks"):
        fake.env(tasks_path=str(bad))


def test_tasks_path_with_checker(fake: FakeAdb, tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"key": "bt", "goal": "Turn on Bluetooth.", "checks": [{"setting": "bluetooth_on", "equals": 1}]}) + "\n")
    fake.set(bluetooth="1", wifi="0", airplane="0")
    env = fake.env(tasks_path=str(path))
    obs, info = env.reset(seed=3)
    assert info["task_id"] == "device/train/bt" and "Goal: Turn on Bluetooth." in obs
    *_, info = env.step(act("status", goal_status="complete"))
    assert info["reward_components"]["success"] == 1.0


def test_check_env_passes_on_the_adb_backend(fake: FakeAdb) -> None:
    report = creditgym.check_env(fake.env(max_turns=3), n_seeds=2, n_fuzz=0, strict=False)
    assert report.ok, str(report)
    assert any(r.name == "determinism" and "skipped" in r.message for r in report.results)
