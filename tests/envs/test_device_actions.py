"""Device family: the JSON action grammar and the screen text (parse / render round trip)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditgym.envs.device import DeviceEnv
from creditgym.envs.device.actions import DeviceAction, parse_action
from creditgym.envs.device.screen import UIElement, parse_screen, render_element, render_screen


# The AndroidWorld validation table (json_action.JSONAction.__post_init__) and our additions.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"action_type": "click", "index": 3}', DeviceAction("click", index=3)),
        ('{"action_type": "click", "index": "3"}', DeviceAction("click", index=3)),
        ('{"action_type": "click", "index": 3.0}', DeviceAction("click", index=3)),
        ('{"action_type": "click", "x": 10, "y": 20}', DeviceAction("click", x=10, y=20)),
        ('Reason: go.\nAction: {"action_type": "navigate_back"}', DeviceAction("navigate_back")),
        ('Action: {"action_type": "wait"} Action: {"action_type": "navigate_home"}', DeviceAction("navigate_home")),
        ('{"action_type": "wait"} {"action_type": "navigate_home"}', DeviceAction("wait")),  # two objects: the first
        ('{"action_type": "scroll", "direction": "down", "index": 2}', DeviceAction("scroll", index=2, direction="down")),
        ('{"action_type": "input_text", "text": "hi", "index": 1, "clear_text": false}', DeviceAction("input_text", index=1, text="hi", clear_text=False)),
        ('{"action_type": "status", "goal_status": "infeasible"}', DeviceAction("status", goal_status="infeasible")),
        ('{"action_type": "open_app", "app_name": "shop", "reason": "x"}', DeviceAction("open_app", app_name="shop", ignored_keys=("reason",))),
        ('{"action_type": "keyboard_enter", "keycode": "KEYCODE_ENTER"}', DeviceAction("keyboard_enter", keycode="KEYCODE_ENTER")),
    ],
)
def test_valid_actions_parse(text: str, expected: DeviceAction) -> None:
    assert parse_action(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"action_type": "fly"}', "unknown action_type"),
        ('{"action_type": "click", "index": 2.5}', "integer"),
        ('{"action_type": "click", "index": "three"}', "integer"),
        ('{"action_type": "click", "index": true}', "integer"),
        ('{"action_type": "click", "index": 1, "x": 5, "y": 5}', "not both"),
        ('{"action_type": "click", "x": 5}', "both x and y"),
        ('{"action_type": "click"}', "needs an index"),
        ('{"action_type": "scroll", "direction": "sideways"}', "direction"),
        ('{"action_type": "scroll"}', "direction"),
        ('{"action_type": "keyboard_enter", "keycode": "ENTER"}', "KEYCODE_"),
        ('{"action_type": "click", "index": 1,}', "JSON"),  # trailing comma
        ('{"action_type": "status", "goal_status": "done"}', "goal_status"),
        ('{"action_type": "answer", "text": "  "}', "non-empty"),
        ('{"action_type": "open_app"}', "app_name"),
        ('{"action_type": "input_text", "index": 0}', "text"),
        ("[1, 2]", "JSON object"),
        ("click 3", "no JSON"),
        ('{"action_type": "click", "index": 1e400}', "integer"),
    ],
)
def test_invalid_actions_name_the_problem(text: str, reason: str) -> None:
    got = parse_action(text)
    assert isinstance(got, str) and reason in got


@given(st.text(max_size=200))
def test_parse_action_is_total(text: str) -> None:
    assert isinstance(parse_action(text), (DeviceAction, str))


_ELEMENTS = st.builds(
    UIElement,
    cls=st.sampled_from(["TextView", "Button", "Switch", "EditText", "ImageButton"]),
    bounds=st.tuples(*(st.integers(-5, 3000) for _ in range(4))),
    text=st.none() | st.text(max_size=30),
    desc=st.none() | st.text(max_size=30),
    hint=st.none() | st.text(max_size=10),
    rid=st.none() | st.from_regex(r"[a-z]{1,8}:id/[a-z_]{1,8}", fullmatch=True),
    checkable=st.booleans(),
    editable=st.booleans(),
    scrollable=st.booleans(),
    clickable=st.booleans(),
    focused=st.booleans(),
    disabled=st.booleans(),
)


@given(st.lists(_ELEMENTS, max_size=6))
def test_screen_reparses_to_the_same_elements(elements: list[UIElement]) -> None:
    # checked only exists on checkable elements
    elements = [UIElement(**{**e.__dict__, "checked": e.checkable and bool(e.bounds[0] % 2)}) for e in elements]
    text = render_screen("Messages", elements)
    if any("\n" in (e.text or "") + (e.desc or "") + (e.hint or "") for e in elements):
        assert "\n" not in "".join(render_element(i, e) for i, e in enumerate(elements))  # JSON-escaped
    app, back = parse_screen(text)
    assert app == "Messages"
    assert back == elements


@given(st.lists(_ELEMENTS, max_size=6), st.sampled_from(["Messages", "Home", "Settings"]))
def test_compact_screen_reparses_to_the_same_elements_without_bounds(elements: list[UIElement], app: str) -> None:
    elements = [UIElement(**{**e.__dict__, "checked": e.checkable and bool(e.bounds[0] % 2)}) for e in elements]
    text = render_screen(app, elements, compact=True)
    assert "bounds=" not in text
    back_app, back = parse_screen(text)
    assert back_app == app
    assert back == [UIElement(**{**e.__dict__, "bounds": (0, 0, 0, 0)}) for e in elements]


def test_compact_line_grammar_by_hand() -> None:
    e = UIElement("Switch", (0, 264, 1080, 464), text="Wi-Fi", rid="settings:id/wifi", checkable=True, checked=True, clickable=True)
    assert render_element(4, e, "Settings") == '[4] Switch text="Wi-Fi" id="wifi" checked=true clickable'
    assert render_element(4, e, "Contacts") == '[4] Switch text="Wi-Fi" id="settings:id/wifi" checked=true clickable'
    home = UIElement("TextView", (0, 0, 270, 320), text="Clock", rid="launcher:id/clock", clickable=True)
    clock = UIElement("TextView", (0, 0, 1080, 96), text="09:41", rid="android:id/clock")
    text = render_screen("Home", [clock, home], compact=True)
    assert text == 'Current app: Home\n[0] TextView text="09:41" id="android:id/clock"\n[1] TextView text="Clock" id="clock" clickable'
    assert [e.rid for e in parse_screen(text)[1]] == ["android:id/clock", "launcher:id/clock"]


def test_compact_screen_costs_fewer_tokens_and_the_env_checks_the_knob() -> None:
    full, compact = (DeviceEnv(difficulty=2, screen=s).reset(seed=3)[0] for s in ("full", "compact"))
    assert len(compact) < 0.75 * len(full)
    assert parse_screen(compact)[1] == [UIElement(**{**e.__dict__, "bounds": (0, 0, 0, 0)}) for e in parse_screen(full)[1]]
    with pytest.raises(ValueError, match="screen must be"):
        DeviceEnv(screen="tiny")


def test_line_grammar_by_hand() -> None:
    e = UIElement("Switch", (0, 264, 1080, 464), text='Wi-"Fi"', rid="settings:id/wifi", checkable=True, checked=True, clickable=True)
    assert render_element(4, e) == 'UI element 4: Switch text="Wi-\\"Fi\\"" id="settings:id/wifi" checked=true clickable bounds=[0,264][1080,464]'
    e2 = UIElement("EditText", (48, 2180, 880, 2330), hint="Text message", editable=True, clickable=True, focused=True)
    assert render_element(2, e2) == 'UI element 2: EditText hint="Text message" editable clickable focused bounds=[48,2180][880,2330]'
