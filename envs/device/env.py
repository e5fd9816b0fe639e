"""DeviceEnv: phone control in the DigiRL / AndroidWorld setting (ENVS.md section 4).

The agent sees a numbered list of UI elements and replies with one JSON action; a simulated
phone (pure Python) or a real device over adb executes it. Reward is DigiRL's sparse success
(arXiv 2406.11896): 1/0 on the terminating `status` step, 0 on truncation, with an optional
per-step penalty and potential-based progress shaping (Ng, Harada & Russell 1999: F = Φ(s') - Φ(s)
with γ = 1 and Φ = 0 at termination leaves optimal policies unchanged). `reward="progress"` adds
partial credit for the subgoals an unsuccessful episode leaves met.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from creditgym.envs.base import BackendError, Invalid, Outcome, Parsed, Task, TextEnv
from creditgym.envs.device.actions import DeviceAction, parse_action
from creditgym.envs.device.apps import Layout
from creditgym.envs.device.expert import device_expert
from creditgym.envs.device.phone import Phone
from creditgym.envs.device.screen import SCREEN_H, SCREEN_W, UIElement, render_screen
from creditgym.envs.device.state import APPS, DeviceState, clone
from creditgym.envs.device.tasks import generate_task, judge, subgoals, task_from_id

__all__ = ["DeviceEnv"]

log = logging.getLogger(__name__)

_INSTRUCTIONS = """You are operating an Android phone. Goal: {goal}
Reply with a short reason and one action:
Reason: ...
Action: {{"action_type": ...}}
Actions: click / long_press {{"index"}}, input_text {{"text", "index"}}, keyboard_enter,
scroll {{"direction": up|down|left|right, "index"?}}, navigate_home, navigate_back,
open_app {{"app_name"}}, wait, answer {{"text"}}, status {{"goal_status": complete|infeasible}}.
Apps: Settings, Contacts, Messages, Search, Shop. Answer questions with "answer", then finish with status.
You have {max_turns} actions.

{screen}"""
_EXAMPLE = 'Example: Action: {"action_type": "click", "index": 3}'


class DeviceEnv(TextEnv):
    """Simulated (or adb-driven) phone; see ENVS.md section 4 for every knob."""

    # history: each turn sees the goal, the last action and the current screen (DigiRL, arXiv 2406.11896)
    metadata = {**TextEnv.metadata, "obs_role": "user", "stop": (), "deterministic": True,
                "history": {"mode": "window", "k": 1}}  # fmt: skip

    def __init__(
        self,
        split: str = "train",
        difficulty: int | tuple[int, ...] = 1,
        popup_prob: float = 0.1,
        list_length: tuple[int, int] = (8, 30),
        distractor_elements: int = 0,
        shuffle_layout: bool = False,
        p_infeasible: float = 0.1,
        max_turns: int = 15,
        step_penalty: float = 0.0,
        invalid_penalty: float = 0.0,
        progress_shaping: bool = False,
        reward: str = "success",
        backend: str = "sim",
        adb_path: str = "adb",
        serial: str | None = None,
        app_packages: Mapping[str, str] | None = None,
        adb_timeout_s: float = 10.0,
        tasks_path: str | None = None,
        abstraction: str = "planner",
        screen: str = "full",
        **kwargs: Any,
    ):
        super().__init__(max_turns=max_turns, invalid_penalty=invalid_penalty, split=split, **kwargs)
        if abstraction not in ("subgoals", "planner"):
            raise ValueError(f"abstraction must be 'subgoals' or 'planner' (docs/credit.md, pvd), got {abstraction!r}")
        self.abstraction = abstraction
        if screen not in ("full", "compact"):
            raise ValueError(f"screen must be 'full' (AndroidWorld's element lines) or 'compact' (no bounds, short ids), got {screen!r}")
        self.screen = screen
        # the planner's private copy of this simulator is built from the same settings, lazily
        self._planner_kwargs = dict(split=split, difficulty=difficulty, popup_prob=popup_prob, list_length=list_length,
                                    distractor_elements=distractor_elements, shuffle_layout=shuffle_layout,
                                    p_infeasible=p_infeasible, max_turns=max_turns, step_penalty=step_penalty,
                                    invalid_penalty=invalid_penalty, progress_shaping=progress_shaping,
                                    reward=reward, abstraction="subgoals", screen=screen, **kwargs)  # fmt: skip
        self._planner: DeviceEnv | None = None
        self._seen_obs: list[str] = []
        if reward not in ("success", "progress"):
            raise ValueError(f"reward must be 'success' (DigiRL's 1/0) or 'progress' (plus half the share of subgoals "
                             f"an unsuccessful episode leaves met; docs/envs/device.md), got {reward!r}")
        self.reward_kind = reward
        if backend not in ("sim", "adb"):
            raise ValueError(f"backend must be 'sim' or 'adb', got {backend!r}")
        if not 0.0 <= popup_prob <= 1.0 or not 0.0 <= p_infeasible <= 1.0:
            raise ValueError(f"popup_prob and p_infeasible must lie in [0, 1], got {popup_prob}, {p_infeasible}")
        if not 0 <= int(distractor_elements) <= 10:
            raise ValueError(f"distractor_elements must be in 0..10, got {distractor_elements}")
        self.difficulty = difficulty
        self.popup_prob = float(popup_prob)
        self.list_length = (int(list_length[0]), int(list_length[1]))
        self.distractor_elements = int(distractor_elements)
        self.shuffle_layout = bool(shuffle_layout)
        self.p_infeasible = float(p_infeasible)
        self.step_penalty = float(step_penalty)
        self.progress_shaping = bool(progress_shaping)
        self.backend = backend
        self._adb: Any = None
        if backend == "adb":
            from creditgym.envs.device.adb import AdbSession

            self.metadata = {**self.metadata, "deterministic": False}
            self._adb = AdbSession(adb_path, serial, app_packages, adb_timeout_s, tasks_path)
        self._phone: Phone | None = None
        self._elements: list[UIElement] = []
        self._app = "Home"
        self._status: str | None = None
        self._counts = {"invalid": 0, "fail_streak": 0}
        self._sums = {"step_penalty": 0.0, "shaping": 0.0}
        self._phi = 0.0
        self._judged: dict[str, float] = {}
        self._adb_err: BackendError | None = None

    # ------------------------------------------------------------------ episode setup
    def _new_task(self, rng: np.random.Generator, options: Mapping[str, Any]) -> Task:
        if self._adb is not None:
            return self._adb.new_task(rng, self.split, options.get("task_id"))
        if "task_id" in options:
            return task_from_id(str(options["task_id"]))
        return generate_task(rng, self.split, self.difficulty, self.list_length, self.p_infeasible)

    def _begin_episode(self, task: Task, seed: int | None, options: Mapping[str, Any]) -> None:
        super()._begin_episode(task, seed, options)
        self._status = None
        self._counts = {"invalid": 0, "fail_streak": 0}
        self._sums = {"step_penalty": 0.0, "shaping": 0.0, "partial": 0.0}
        if self._adb is not None:
            self._phone = None
            self._refresh_adb(go_home=True)
            return
        layout = Layout(distractors=self.distractor_elements)
        if self.shuffle_layout:
            home, rows = list(layout.home_order), list(layout.settings_order)
            layout = Layout(
                home_order=tuple(home[int(i)] for i in self.np_random.permutation(len(home))),
                settings_order=tuple(rows[int(i)] for i in self.np_random.permutation(len(rows))),
                distractors=self.distractor_elements,
            )
        self._phone = Phone(clone(task.private["world"]), layout, self.np_random, self.popup_prob)
        self._sync_sim()
        self._phi = self._potential()

    def _first_obs(self) -> str:
        assert self.task is not None
        return _INSTRUCTIONS.format(goal=self.task.prompt, max_turns=self.max_turns, screen=self._screen_text())

    # ------------------------------------------------------------------ screens
    def _sync_sim(self) -> None:
        assert self._phone is not None
        self._elements = self._phone.elements()
        self._app = self._phone.nav["app"]

    def _refresh_adb(self, go_home: bool = False) -> None:
        try:
            self._app, self._elements = self._adb.observe(go_home=go_home)
            self._counts["fail_streak"] = 0
            self._adb_err = None
        except BackendError as err:
            self._counts["fail_streak"] += 1
            self._app, self._elements = "unknown", []
            self._adb_err = err

    def _screen_text(self) -> str:
        if self._adb is not None and self._adb_err is not None:
            return self._backend_error_obs(self._adb_err)
        return render_screen(self._app, self._elements, compact=self.screen == "compact")

    # ------------------------------------------------------------------ parsing and stepping
    def _parse(self, action: str) -> Parsed | Invalid:
        a = parse_action(action)
        if isinstance(a, DeviceAction) and a.index is not None and not 0 <= a.index < len(self._elements):
            a = f"index {a.index} is not on the screen (elements 0-{len(self._elements) - 1})" if self._elements else "the screen has no elements to act on"
        if isinstance(a, DeviceAction) and a.x is not None and not (0 <= a.x < SCREEN_W and 0 <= (a.y or 0) < SCREEN_H):
            a = f"x, y = {a.x}, {a.y} lies outside the {SCREEN_W}x{SCREEN_H} screen"
        if isinstance(a, str):
            self._counts["invalid"] += 1
            return Invalid(f"Invalid action: {a}. {_EXAMPLE}\n\n{self._screen_text()}")
        return Parsed(a.action_type, {"action": a}, action)

    def _apply(self, parsed: Parsed) -> Outcome:
        a: DeviceAction = parsed.args["action"]
        info: dict[str, Any] = {"ignored_keys": list(a.ignored_keys)} if a.ignored_keys else {}
        if a.action_type == "status":
            self._status = a.goal_status
            comps = self._judged = self._judge()
            if comps.get("backend_error"):
                info["backend_error"] = "checker"
            shaping = -self._phi if self.progress_shaping else 0.0
            self._sums["shaping"] += shaping
            comps["partial"] = self._sums["partial"] = self._partial_credit(comps["success"], comps["collateral"])
            reward = self._pay_step() + comps["success"] + comps["partial"] + shaping
            return Outcome("", reward=reward, terminated=True, info=info)
        if self._adb is not None:
            effect = self._adb_act(a)  # may raise BackendError: the step then pays nothing
            reward = self._pay_step()
        else:
            effect = self._sim_act(a)
            self._sync_sim()
            reward = self._pay_step()
            if self.progress_shaping:
                phi = self._potential()
                reward += phi - self._phi
                self._sums["shaping"] += phi - self._phi
                self._phi = phi
        return Outcome(f"Result: {effect}\n\n{self._screen_text()}", reward=reward, info=info)

    def _truncation_reward(self) -> float:
        """Truncation pays the partial credit too, so ending with a wrong status is no better than running out."""
        self._sums["partial"] = self._partial_credit(0.0, self._collateral_now())
        return self._sums["partial"]

    def _pay_step(self) -> float:
        """The step penalty of one executed action (recorded for reward_components)."""
        self._sums["step_penalty"] = self._sums["step_penalty"] - self.step_penalty
        return 0.0 - self.step_penalty

    def _sim_act(self, a: DeviceAction) -> str:
        p = self._phone
        assert p is not None
        kind = a.action_type
        if kind in ("click", "long_press", "double_tap"):
            i = a.index if a.index is not None else self._hit(a.x or 0, a.y or 0)
            if i is None:
                return "Nothing happened."
            if kind == "long_press":
                return p.long_press(i)
            effect = p.click(i)
            if kind == "double_tap":
                x, y = self._elements[i].center
                j = self._hit(x, y, p.elements())
                effect += " " + (p.click(j) if j is not None else "Nothing happened.")
            return effect
        if kind == "input_text":
            i = a.index if a.index is not None else self._focused_index()
            if i is None:
                return "Nothing happened: no field is focused; give the index of a text field."
            return p.input_text(i, a.text or "", a.clear_text)
        if kind == "answer":
            p.data["answers"].append(a.text or "")
            return f"Answered {json.dumps(a.text, ensure_ascii=False)}."
        simple = {
            "keyboard_enter": p.keyboard_enter,
            "navigate_home": p.navigate_home,
            "navigate_back": p.navigate_back,
            "wait": lambda: "Waited 1 second.",
        }
        if kind in simple:
            return simple[kind]()
        if kind == "scroll":
            return p.scroll(a.direction or "down")
        if kind == "swipe":
            return p.swipe(a.direction or "up")
        if kind == "open_app":
            return p.open_app(a.app_name or "")
        raise ValueError(f"unhandled action type {kind!r}")

    def _hit(self, x: int, y: int, elements: list[UIElement] | None = None) -> int | None:
        """The smallest clickable element under (x, y), else the smallest element there."""
        els = self._elements if elements is None else elements
        under = [(i, e) for i, e in enumerate(els) if e.bounds[0] <= x < e.bounds[2] and e.bounds[1] <= y < e.bounds[3]]
        if not under:
            return None
        area = lambda ie: (not ie[1].clickable, (ie[1].bounds[2] - ie[1].bounds[0]) * (ie[1].bounds[3] - ie[1].bounds[1]), -ie[0])
        return min(under, key=area)[0]

    def _focused_index(self) -> int | None:
        return next((i for i, e in enumerate(self._elements) if e.focused and e.editable), None)

    def _adb_act(self, a: DeviceAction) -> str:
        if a.action_type == "answer":
            self._adb.answers.append(a.text or "")
            return f"Answered {json.dumps(a.text, ensure_ascii=False)}."
        try:
            effect = self._adb.act(a, self._elements)
        except BackendError as err:
            self._counts["fail_streak"] += 1
            raise err
        self._refresh_adb()
        if self._adb_err is not None:
            raise self._adb_err
        return effect

    def _backend_error_obs(self, err: BackendError) -> str:
        return f"Device error: {err.kind} ({err.detail}). Try again or wait."

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        if self._adb is not None and not (terminated or truncated) and self._counts["fail_streak"] >= 3:
            # three device failures in a row end the episode (ENVS.md section 4, adb backend)
            self._done = True
            comps = {k: float(v) for k, v in self._final_components().items()}
            comps["return"] = float(sum(self._rewards))
            info["reward_components"] = comps
            truncated = True
        return obs, reward, terminated, truncated, info

    # ------------------------------------------------------------------ rewards and keys
    def _potential(self) -> float:
        assert self.task is not None and self._phone is not None
        conds = subgoals(self.task, self._phone.data)
        return sum(conds) / len(conds)

    def _progress(self) -> float:
        """Share of the task's subgoals met now (goal app open, goal holds); 1.0 after a success."""
        if self._status is not None and self._judged.get("success", 0.0) >= 1.0:
            return 1.0
        if self._phone is None or self.task is None:
            return 0.0
        return self._potential()

    def _partial_credit(self, success: float, collateral: float) -> float:
        """`reward="progress"`: an episode that ends without success (a wrong `status` or the turn
        budget) and without collateral earns half the share of subgoals met (0.25 for the goal's app
        open, 0.5 when the goal holds but the status is wrong); a success earns 1 as under
        `"success"`. A graded outcome reward for policies that never succeed yet (as Search's F1 and
        Tools' ToolRL reward), so group baselines see a spread."""
        if self.reward_kind != "progress" or success >= 1.0 or collateral > 0:
            return 0.0
        return 0.5 * self._progress()

    def _judge(self) -> dict[str, float]:
        assert self.task is not None
        if self._adb is not None:
            return self._adb.judge(self.task, self._status)
        assert self._phone is not None
        return judge(self.task, self._phone.data, self._status)

    def _final_components(self) -> dict[str, float]:
        if self._status is not None:
            comps = dict(self._judged)
        else:
            comps = {"success": 0.0, "partial": self._sums.get("partial", 0.0), "collateral": self._collateral_now(), "answered": self._answered()}
        comps.pop("backend_error", None)
        comps["progress"] = self._progress()
        comps.update(
            step_penalty=self._sums["step_penalty"],
            invalid=self._counts["invalid"] * self.invalid_penalty,
            shaping=self._sums["shaping"],
            n_steps=float(self._turn),
            n_popups=float(self._phone.n_popups if self._phone is not None else 0),
        )
        return comps

    def _collateral_now(self) -> float:
        if self._phone is None or self.task is None:
            return 0.0
        return judge(self.task, self._phone.data, None)["collateral"]

    def _answered(self) -> float:
        answers = self._phone.data["answers"] if self._phone is not None else self._adb.answers
        return float(bool(answers))

    def _state_key(self) -> str:
        assert self.task is not None
        if self._phone is None:
            digest = DeviceState.from_dict({"screen": render_screen(self._app, self._elements), "answers": self._adb.answers}).digest()
            return f"device|{self.task.task_id}|{self._app}/adb|scroll=0|popup=-|s={digest}"
        d = self._phone.data
        nav = d["nav"]
        return f"device|{self.task.task_id}|{nav['app']}/{nav['screen']}|scroll={nav['scroll']}|popup={d['popup'] or '-'}|s={DeviceState.from_dict(d).digest()}"

    def _abstract_state(self) -> str:
        """Progress, not text (`pvd`, docs/credit.md). `abstraction="planner"` (default; simulator):
        the number of steps the noise-free scripted expert needs from here to succeed, found by
        running it on a private copy of this simulator, or `fail` when it cannot succeed within the
        turns left (`_planner_steps`; Device's rank correlation with the Monte-Carlo truth 0.37 ->
        0.68, docs/accuracy.md). `abstraction="subgoals"`: which of the task's subgoals hold, the
        current app/screen, whether a popup is open, and the turns left capped at 3. The emulator
        backend (no copy to plan on): app and turns left."""
        assert self.task is not None
        self._seen_obs = [*self._seen_obs[: self._turn], self._last_obs]
        left = min(self.max_turns - self.turn, 3)
        if self._phone is None:
            return f"device|{self._app}|left={left}"
        if self.abstraction == "planner":
            if self._done:
                return "device|togo=end"
            steps = self._planner_steps()
            return f"device|togo={'fail' if steps is None else steps}"
        d = self._phone.data
        sub = "".join(str(int(c)) for c in subgoals(self.task, d))
        return f"device|sub={sub}|{d['nav']['app']}/{d['nav']['screen']}|popup={int(bool(d['popup']))}|left={left}"

    def _planner_steps(self) -> int | None:
        """Steps the scripted expert (no action noise) takes from the current state to a successful
        `status`, on a copy of this simulator restored from `get_state()` and fed the observations
        and actions so far (the expert reads values off earlier screens); None if it ends without
        success (wrong answer, infeasible task, turn budget). A distance-to-goal heuristic for the
        value (a potential in the sense of Ng et al. 1999), computed by the env; it costs simulator
        steps (about 1 ms each), no policy episodes and no tokens."""
        if self._planner is None:
            self._planner = DeviceEnv(**self._planner_kwargs)
        planner = self._planner
        planner._restore(self.get_state(), self.task)
        obs, acts = list(self._seen_obs), list(self._actions or [])
        rng = np.random.default_rng(0)  # the expert is deterministic; its signature takes an rng
        for steps in range(1, self.max_turns - self._turn + 1):
            action = device_expert(_Seen(obs, acts), rng)
            o, _, terminated, truncated, info = planner.step(action)
            obs.append(o)
            acts.append(action)
            if terminated or truncated:
                success = float(info.get("reward_components", {}).get("success", 0.0)) > 0
                return steps if success else None
        return None

    # ------------------------------------------------------------------ checker hooks
    def _valid_actions(self) -> list[str]:
        acts = [json.dumps({"action_type": "click", "index": i}) for i, e in enumerate(self._elements) if e.clickable][:6]
        acts += [json.dumps({"action_type": "input_text", "index": i, "text": "hello"}) for i, e in enumerate(self._elements) if e.editable][:1]
        acts += ['{"action_type": "scroll", "direction": "down"}', '{"action_type": "navigate_back"}']
        acts += [json.dumps({"action_type": "open_app", "app_name": app}) for app in APPS]
        return acts

    def _fuzz_actions(self) -> list[str]:
        return [
            '{"action_type": "click"}', '{"action_type": "click", "index": -1}', '{"action_type": "click", "index": 1000000000}',
            '{"action_type": "click", "index": "3"}', '{"action_type": "click", "index": 3.0}', '{"action_type": "click", "index": 2.5}',
            '{"action_type": "click", "index": 1, "x": 5, "y": 5}', '{"action_type": "scroll", "direction": "sideways"}',
            '{"action_type": "fly"}', '{"action_type": "click", "index": 1,}', '{"action_type": "open_app"}',
            '{"action_type": "input_text", "index": 0, "text": "\\"; rm -rf / $(reboot) \\n 🙂"}',
            '{"action_type": "status", "goal_status": "done"}', '{"action_type": "answer", "text": ""}',
            '{"action_type": "click", "x": 99999, "y": 5}', 'Action: {"action_type": "wait"} {"action_type": "navigate_home"}',
            '{"action_type": "keyboard_enter", "keycode": "ENTER"}', '[1, 2, 3]', '{"action_type": null}',
        ]

    # ------------------------------------------------------------------ snapshot state
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self._phone is not None and self.task is not None:
            state["snapshot"] = {
                "task_id": self.task.task_id,
                "data": DeviceState.from_dict(self._phone.data).canonical,
                "rng": self.np_random.bit_generator.state,
                "counts": dict(self._counts),
                "sums": dict(self._sums),
                "phi": self._phi,
                "n_popups": self._phone.n_popups,
                "status": self._status,
                "judged": dict(self._judged),
                "turn": self._turn,
                "rewards": list(self._rewards),
                "seen_obs": list(self._seen_obs),
            }
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot directly (simulator), else reset and replay."""
        snap = state.get("snapshot")
        if snap is None or self._adb is not None:
            super().set_state(state)
            return
        self._restore(state, task_from_id(snap["task_id"]))

    def _restore(self, state: Mapping[str, Any], task: Task) -> None:
        """Restore the simulator snapshot of `state` on `task` (the planner passes its env's task
        object: rebuilding a task from its id costs up to a second at difficulty 3)."""
        snap = state["snapshot"]
        self._begin_episode(task, state.get("seed"), dict(state.get("options") or {}))
        assert self._phone is not None
        self._phone.data = DeviceState(snap["data"]).to_dict()
        self._phone.n_popups = int(snap["n_popups"])
        self.np_random.bit_generator.state = snap["rng"]
        self._counts, self._sums, self._phi = dict(snap["counts"]), dict(snap["sums"]), float(snap["phi"])
        self._status = snap["status"]
        self._judged = dict(snap.get("judged", {}))
        self._turn = int(snap["turn"])
        self._actions = list(state["actions"])
        self._rewards = [float(r) for r in snap["rewards"]]
        self._seen_obs = list(snap.get("seen_obs", []))
        self._sync_sim()
        self._last_obs = ""


class _Seen:
    """The `History` the planner hands the scripted expert: observations and actions so far."""

    role = "agent"

    def __init__(self, obs_texts: list[str], action_texts: list[str]):
        self.obs_texts = obs_texts
        self.action_texts = action_texts
