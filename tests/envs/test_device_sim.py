"""Device family: the simulated phone, tasks, success checks, rewards, keys and the checker."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import creditgym
from creditgym.agents.base import Context
from creditgym.agents.scripted import play_episode
from creditgym.envs.base import split_of_key
from creditgym.envs.device import DeviceEnv, device_expert, generate_task, parse_screen, task_from_id
from creditgym.envs.device.state import clone
from creditgym.envs.device.tasks import HELDOUT_CELLS, TEMPLATES, answer_matches, judge


def act(kind: str, **kw: object) -> str:
    return json.dumps({"action_type": kind, **kw})


def index_of(obs: str, text: str) -> int:
    _, els = parse_screen(obs)
    return next(i for i, e in enumerate(els) if e.text == text or e.desc == text or e.hint == text)


def task_with(template: str, infeasible: bool = False, n: int = 12, seed: int = 7):
    d = TEMPLATES[template][0]
    return task_from_id(f"device/train/d{d}.{template}.{'x' if infeasible else 'f'}.n{n}.{seed:08x}")


@pytest.mark.parametrize("kwargs", [{}, {"difficulty": 3, "shuffle_layout": True, "distractor_elements": 4},
                                    {"difficulty": 2, "progress_shaping": True, "step_penalty": 0.01, "invalid_penalty": -0.1},
                                    {"difficulty": 2, "screen": "compact"}])
def test_check_env_passes(kwargs: dict) -> None:
    report = creditgym.check_env("creditgym/Device-v0", **kwargs)
    assert report.ok


# ---------------------------------------------------------------------- success checks
def test_toggle_checker_positive_negative_collateral() -> None:
    task = task_with("toggle")
    spec, world = task.private["spec"], task.private["world"]
    final = clone(world)
    final["settings"][spec["key"]] = spec["target"]
    assert judge(task, final, "complete") == {"success": 1.0, "collateral": 0.0, "answered": 0.0}
    assert judge(task, final, "infeasible")["success"] == 0.0
    assert judge(task, final, None)["success"] == 0.0
    assert judge(task, clone(world), "complete")["success"] == 0.0  # goal not met
    other = next(k for k in ("wifi", "bluetooth", "dnd") if k != spec["key"])
    final["settings"][other] = not final["settings"][other]
    assert judge(task, final, "complete") == {"success": 0.0, "collateral": 1.0, "answered": 0.0}


def test_send_checker_trims_and_flags_collateral() -> None:
    task = task_with("send")
    spec, final = task.private["spec"], clone(task.private["world"])
    final["threads"][spec["name"]].append(["out", f"  {spec['text']} "])
    assert judge(task, final, "complete")["success"] == 1.0
    final["threads"][spec["name"]].append(["out", spec["text"] + "!"])
    assert judge(task, final, "complete")["success"] == 0.0
    final = clone(task.private["world"])
    final["threads"][spec["name"]].append(["out", spec["text"]])
    final["shop"]["orders"].append([["x", 1]])
    assert judge(task, final, "complete")["collateral"] == 1.0


def test_cart_and_contact_checkers() -> None:
    task = task_with("add_cart")
    spec, final = task.private["spec"], clone(task.private["world"])
    final["shop"]["cart"][spec["product"]] = spec["qty"]
    assert judge(task, final, "complete")["success"] == 1.0
    final["shop"]["cart"][spec["product"]] = spec["qty"] + 1
    assert judge(task, final, "complete")["success"] == 0.0
    task = task_with("add_contact")
    spec, final = task.private["spec"], clone(task.private["world"])
    final["contacts"][spec["name"]] = spec["phone"].replace("-", "")  # digits compared
    assert judge(task, final, "complete")["success"] == 1.0
    final["contacts"].pop(sorted(final["contacts"])[0])
    assert judge(task, final, "complete")["collateral"] == 1.0


def test_answer_checkers_em_and_numeric_prices() -> None:
    task = task_with("last_said")
    final = clone(task.private["world"])
    final["answers"] = ["wrong", task.gold[0].upper() + "."]  # the last answer counts, normalized
    assert judge(task, final, "complete") == {"success": 1.0, "collateral": 0.0, "answered": 1.0}
    final["answers"] = [task.gold[0], "wrong"]
    assert judge(task, final, "complete")["success"] == 0.0
    assert answer_matches("12.99", ["$12.99"], numeric=True)
    assert answer_matches("It costs $12.99", ["$12.99"], numeric=True)
    assert not answer_matches("$12.90", ["$12.99"], numeric=True)
    assert not answer_matches("twelve", ["$12.99"], numeric=True)
    assert not answer_matches(None, ["x"])


def test_infeasible_tasks_need_status_infeasible() -> None:
    for template in ("toggle", "send", "edit_contact", "add_cart", "shop_to_messages"):
        task = task_with(template, infeasible=True)
        world = clone(task.private["world"])
        assert judge(task, world, "infeasible")["success"] == 1.0, template
        assert judge(task, world, "complete")["success"] == 0.0, template


# ---------------------------------------------------------------------- tasks and splits
def test_splits_are_disjoint_and_heldout_reserves_cells() -> None:
    ids = {}
    for split in ("train", "test", "heldout"):
        rng = np.random.default_rng(0)
        tasks = [generate_task(rng, split, difficulty=(1, 2, 3)) for _ in range(150)]
        ids[split] = {t.task_id.split("/", 2)[2] for t in tasks}
        assert all(split_of_key(k) == split for k in ids[split])
        templates = {t.private["spec"]["template"] for t in tasks}
        if split == "heldout":
            assert set(HELDOUT_CELLS) <= templates
        else:
            assert not set(HELDOUT_CELLS) & templates
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["heldout"] and not ids["test"] & ids["heldout"]


def test_task_id_rebuilds_the_same_phone() -> None:
    env = DeviceEnv(split="test", difficulty=3)
    obs, info = env.reset(seed=11)
    obs2, info2 = DeviceEnv(split="test", difficulty=3).reset(options={"task_id": info["task_id"]})
    assert obs == obs2 and info == info2
    with pytest.raises(ValueError, match="bad device task"):
        task_from_id("device/train/nonsense")


# ---------------------------------------------------------------------- the simulator
def test_scroll_and_swipe_directions() -> None:
    env = DeviceEnv(difficulty=2, list_length=(30, 30), popup_prob=0.0)
    env.reset(seed=0)
    obs, *_ = env.step(act("open_app", app_name="Contacts"))
    first = [e.text for e in parse_screen(obs)[1] if e.rid == "contacts:id/name"]
    assert len(first) == 8
    down, *_ = env.step(act("scroll", direction="down"))
    after = [e.text for e in parse_screen(down)[1] if e.rid == "contacts:id/name"]
    assert after[:2] == first[6:8] and "Scrolled down." in down  # a scroll moves 6 rows
    up, *_ = env.step(act("swipe", direction="down"))  # finger down = content up
    assert [e.text for e in parse_screen(up)[1] if e.rid == "contacts:id/name"] == first
    same, *_ = env.step(act("scroll", direction="up"))
    assert same.startswith("Result: Nothing happened.")
    swiped, *_ = env.step(act("swipe", direction="up"))
    assert [e.text for e in parse_screen(swiped)[1] if e.rid == "contacts:id/name"] == after


def test_popups_fixed_per_seed_and_allow_is_collateral() -> None:
    def run(seed: int) -> list[str]:
        env = DeviceEnv(popup_prob=0.6)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for a in (act("open_app", app_name="Shop"), act("navigate_back"), act("open_app", app_name="Messages"), act("click", index=3)):
            out.append(env.step(a)[0])
        return out

    assert run(5) == run(5)
    env = DeviceEnv(popup_prob=1.0, difficulty=1)
    env.reset(seed=1)
    for _ in range(20):  # reopen apps until a notifications pop-up shows
        obs, *_ = env.step(act("open_app", app_name="Settings"))
        if "Allow" in [e.text for e in parse_screen(obs)[1]]:
            break
    obs, *_ = env.step(act("click", index=index_of(obs, "Allow")))
    assert "Allowed notifications for Settings." in obs
    *_, info = env.step(act("status", goal_status="complete"))
    assert info["reward_components"]["collateral"] == 1.0 and info["reward_components"]["success"] == 0.0


def test_back_dismisses_popups_and_modal_hides_screen() -> None:
    env = DeviceEnv(popup_prob=1.0)
    env.reset(seed=2)
    obs, *_ = env.step(act("open_app", app_name="Contacts"))
    labels = [e.text for e in parse_screen(obs)[1]]
    assert {"Rate this app?", "Not now"} <= set(labels) or any("notifications" in (t or "") for t in labels)
    assert not any(e.rid == "contacts:id/name" for e in parse_screen(obs)[1])  # hidden below the modal
    obs, *_ = env.step(act("navigate_back"))
    assert "Dismissed the pop-up." in obs and any(e.rid == "contacts:id/name" for e in parse_screen(obs)[1])


def test_shuffle_layout_moves_indices() -> None:
    spots = set()
    for seed in range(6):
        obs, _ = DeviceEnv(shuffle_layout=True).reset(seed=seed)
        spots.add(index_of(obs, "Settings"))
    assert len(spots) > 1
    obs, _ = DeviceEnv().reset(seed=0)
    assert index_of(obs, "Settings") == 1


@pytest.mark.parametrize("text", ['say "hi"; rm -rf / $(reboot) `id`', "line1\nline2\r\n\ttab", "emoji 🙂 中文 \u2028 \x85", "\\", "{}" * 50])
def test_hostile_input_text_round_trips(text: str) -> None:
    env = DeviceEnv(popup_prob=0.0)
    env.reset(seed=0)
    obs, *_ = env.step(act("open_app", app_name="Search"))
    obs, _, _, _, info = env.step(json.dumps({"action_type": "input_text", "index": 2, "text": text}))
    assert not info["invalid"] and 'Searched for "' in obs  # Enter submits the stripped query
    assert next(e for e in parse_screen(obs)[1] if e.hint == "Search").text == text.strip()
    obs, *_ = env.step(act("open_app", app_name="Contacts"))
    obs, *_ = env.step(act("click", index=index_of(obs, "Add contact")))
    obs, _, _, _, info = env.step(json.dumps({"action_type": "input_text", "index": index_of(obs, "Name"), "text": text}))
    assert next(e for e in parse_screen(obs)[1] if e.hint == "Name").text == text


_TYPING_ENV = DeviceEnv(popup_prob=0.0, difficulty=2)


@given(st.text(max_size=60))
def test_any_typed_text_is_shown_exactly(text: str) -> None:
    env = _TYPING_ENV
    env.reset(seed=3)
    obs, *_ = env.step(act("open_app", app_name="Contacts"))
    obs, *_ = env.step(act("click", index=index_of(obs, "Add contact")))
    i = index_of(obs, "Name")
    obs, _, _, _, info = env.step(json.dumps({"action_type": "input_text", "index": i, "text": text}))
    assert not info["invalid"]
    field = parse_screen(obs)[1][i]
    sanitized = text.replace("\x00", "\ufffd")
    assert (field.text or "") == "".join(c if not 0xD800 <= ord(c) <= 0xDFFF else "\ufffd" for c in sanitized)[:200]


@pytest.mark.parametrize(("index", "ok"), [("3", True), (3.0, True), (-1, False), (10**9, False)])
def test_index_coercion_and_range(index: object, ok: bool) -> None:
    env = DeviceEnv(popup_prob=0.0)
    obs0, info0 = env.reset(seed=0)
    obs, _, _, _, info = env.step(json.dumps({"action_type": "click", "index": index}))
    assert info["invalid"] is (not ok)
    if not ok:
        assert obs.startswith("Invalid action: index") and 'Example: Action: {"action_type": "click", "index": 3}' in obs
        assert info["state_key"] == info0["state_key"] and obs0.split("\n\n")[-1] in obs  # unchanged screen shown


def test_effect_lines() -> None:
    env = DeviceEnv(popup_prob=0.0)
    env.reset(seed=0)
    assert env.step(act("open_app", app_name="Shopz"))[0].startswith('Result: No app named "Shopz".')
    assert env.step(act("click", index=0))[0].startswith("Result: Nothing happened.")  # the clock is not clickable
    obs, _, _, _, info = env.step(json.dumps({"action_type": "open_app", "app_name": "sHoP", "reason": "shopping"}))
    assert obs.startswith("Result: Opened Shop.") and info["ignored_keys"] == ["reason"]
    obs, *_ = env.step(act("click", index=index_of(obs, "Books")))
    assert obs.startswith('Result: Clicked UI element 5 (TextView "Books").')


# ---------------------------------------------------------------------- rewards and keys
def test_state_key_tracks_hidden_state_not_turns() -> None:
    env = DeviceEnv(popup_prob=0.0)
    _, info0 = env.reset(seed=0)
    env.step(act("open_app", app_name="Settings"))
    _, _, _, _, info = env.step(act("navigate_home"))
    assert info["state_key"] == info0["state_key"]  # another path, same state
    env.step(act("open_app", app_name="Settings"))
    obs, *_ = env.step(act("click", index=index_of(env.render(), "Wi-Fi")))
    obs_home, _, _, _, info = env.step(act("navigate_home"))
    assert obs_home.split("\n\n", 1)[1] == env.reset(seed=0)[0].split("\n\n")[-1]  # the same Home screen ...
    assert info["state_key"] != info0["state_key"]  # ... but Wi-Fi differs below it
    assert info0["state_key"].startswith(f"device|{info0['task_id']}|Home/home|scroll=0|popup=-|s=")


def test_reward_components_add_up_with_shaping() -> None:
    env = DeviceEnv(difficulty=2, progress_shaping=True, step_penalty=0.02, invalid_penalty=-0.1)
    res = play_episode(env, lambda ctx, _: device_expert(ctx, np.random.default_rng(0)) if ctx.action_texts else "not an action", 4)
    rewards, c = res.rewards, res.components
    assert rewards[0] == -0.1 and res.ctx.action_texts[0] == "not an action"
    assert res.terminated and res.ctx.obs_texts[-1] == "" and c["success"] == 1.0
    assert c["return"] == pytest.approx(sum(rewards))
    assert c["success"] + c["step_penalty"] + c["invalid"] + c["shaping"] == pytest.approx(c["return"])
    assert c["shaping"] == pytest.approx(0.0)  # potential-based with Φ = 0 at the start and the end
    assert c["n_steps"] == len(rewards) and c["invalid"] == -0.1
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(act("wait"))


def _end_with(env: DeviceEnv, task_id: str, actions: list[str]) -> tuple[float, dict]:
    env.reset(options={"task_id": task_id})
    for a in actions:
        _, r, term, trunc, info = env.step(a)
    assert term or trunc
    return r, info["reward_components"]


@pytest.mark.parametrize("shaping", [False, True])
def test_progress_reward_is_half_the_subgoals_met(shaping: bool) -> None:
    task_id = task_with("toggle").task_id
    env = DeviceEnv(reward="progress", progress_shaping=shaping, step_penalty=0.01)
    done = act("status", goal_status="complete")
    # the goal's app (Settings) open, the goal not met: 0.5 * 1/2
    r, c = _end_with(env, task_id, [act("open_app", app_name="Settings"), done])
    assert c["success"] == 0.0 and c["partial"] == 0.25 and c["progress"] == 0.5
    assert c["success"] + c["partial"] + c["step_penalty"] + c["invalid"] + c["shaping"] == pytest.approx(c["return"])
    # another app: nothing met, nothing paid
    r, c = _end_with(env, task_id, [act("open_app", app_name="Shop"), done])
    assert c["partial"] == 0.0 and c["progress"] == 0.0 and r == pytest.approx(-0.01 - 0.0 * shaping)
    # the expert's success pays 1, as under reward="success", and progress reads 1
    res = play_episode(env, lambda ctx, _: device_expert(ctx, np.random.default_rng(0)), 0)
    assert res.components["success"] == 1.0 and res.components["partial"] == 0.0 and res.components["progress"] == 1.0
    # truncation pays the same partial credit as a wrong status
    r, c = _end_with(DeviceEnv(reward="progress", max_turns=2), task_id, [act("open_app", app_name="Settings"), act("wait")])
    assert r == 0.25 and c["partial"] == 0.25 and c["progress"] == 0.5 and c["return"] == 0.25
    r, c = _end_with(DeviceEnv(reward="progress", max_turns=2), task_id, [act("open_app", app_name="Settings"), "not an action"])
    assert r == 0.25 and c["partial"] == 0.25 and c["invalid"] == 0.0


def test_progress_reward_withholds_credit_for_collateral_and_is_off_by_default() -> None:
    task = task_with("toggle")
    other = next(k for k in ("Wi-Fi", "Bluetooth") if k.lower().replace("-", "") != task.private["spec"]["key"])
    actions = [act("open_app", app_name="Settings"), None, act("status", goal_status="complete")]
    env = DeviceEnv(reward="progress", popup_prob=0.0)
    env.reset(options={"task_id": task.task_id})
    obs, *_ = env.step(actions[0])
    env.step(act("click", index=index_of(obs, other)))
    _, r, *_, info = env.step(actions[2])
    assert info["reward_components"]["collateral"] == 1.0 and r == 0.0 and info["reward_components"]["partial"] == 0.0
    r, c = _end_with(DeviceEnv(), task.task_id, [actions[0], actions[2]])
    assert r == 0.0 and c["partial"] == 0.0 and c["progress"] == 0.5
    with pytest.raises(ValueError, match="reward must be 'success'"):
        DeviceEnv(reward="f1")


def test_truncation_gives_zero_success() -> None:
    env = gymnasium.make("creditgym/Device-v0", max_turns=3)
    env.reset(seed=0)
    for _ in range(3):
        obs, r, term, trunc, info = env.step(act("wait"))
    assert trunc and not term and r == 0.0 and info["reward_components"]["success"] == 0.0


# ---------------------------------------------------------------------- shipped frozen tasks
def test_data_matches_generator() -> None:
    from creditgym.envs.device.build_data import DATA_DIR, GENERATOR_VERSION, build_split, load_frozen

    assert (DATA_DIR / "tasks_test.jsonl.gz").read_bytes() == build_split("test")
    rows = load_frozen("test")
    assert len(rows) >= 500 and {r["version"] for r in rows} == {GENERATOR_VERSION}
    env = DeviceEnv(split="test")
    obs, info = env.reset(options={"task_id": rows[0]["task_id"]})
    assert f"Goal: {rows[0]['goal']}" in obs and info.get("gold", []) == rows[0]["gold"]


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "heldout"])
def test_data_matches_generator_other_splits(split: str) -> None:
    from creditgym.envs.device.build_data import DATA_DIR, build_split

    assert (DATA_DIR / f"tasks_{split}.jsonl.gz").read_bytes() == build_split(split)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_checker_positive_negative_collateral(template: str) -> None:
    task = task_with(template, n=10, seed=3)
    env = DeviceEnv(popup_prob=0.0)
    play_episode(env, lambda ctx, _: device_expert(ctx, np.random.default_rng(0)), options={"task_id": task.task_id})
    final = clone(env._phone.data)
    assert judge(task, final, "complete")["success"] == 1.0  # positive: the expert's end state
    assert judge(task, task.private["world"], "complete")["success"] == 0.0  # negative: nothing done
    final["settings"]["permissions"]["Shop"] = True  # an untouched path changed
    assert judge(task, final, "complete") == {"success": 0.0, "collateral": 1.0, "answered": float(bool(task.gold))}


def test_snapshot_state_continues_like_the_live_run() -> None:
    env = DeviceEnv(difficulty=3, popup_prob=0.5)
    ctx = play_episode(env, lambda ctx, _: device_expert(ctx, np.random.default_rng(0)), 9, max_turns=3).ctx
    state = json.loads(json.dumps(env.get_state()))  # JSON-serializable
    tail = [device_expert(Context(obs_texts=list(ctx.obs_texts), action_texts=list(ctx.action_texts)), np.random.default_rng(0))]
    live = [env.step(a) for a in tail + ['{"action_type": "scroll", "direction": "down"}', '{"action_type": "open_app", "app_name": "Shop"}']]
    other = DeviceEnv(difficulty=3, popup_prob=0.5)
    other.set_state(state)
    again = [other.step(a) for a in tail + ['{"action_type": "scroll", "direction": "down"}', '{"action_type": "open_app", "app_name": "Shop"}']]
    assert [(o, r, t, tr, i["state_key"]) for o, r, t, tr, i in live] == [(o, r, t, tr, i["state_key"]) for o, r, t, tr, i in again]
