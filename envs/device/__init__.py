"""Device family: phone control with AndroidWorld-style JSON actions (ENVS.md section 4).

`DEVICE` -> `DeviceEnv()`: a simulated phone in pure Python (Settings, Contacts,
Messages, Search, Shop) or, with `backend="adb"`, a real device or emulator over adb.
"""

from creditgym.envs.device.actions import DeviceAction, parse_action
from creditgym.envs.device.env import DeviceEnv
from creditgym.envs.device.expert import device_expert, device_random
from creditgym.envs.device.screen import UIElement, parse_screen, render_screen
from creditgym.envs.device.state import DeviceState
from creditgym.envs.device.tasks import TEMPLATES, generate_task, task_from_id
from creditgym.registry import register

__all__ = [
    "DEVICE",
    "device_expert",
    "device_random",
    "TEMPLATES",
    "DeviceAction",
    "DeviceEnv",
    "DeviceState",
    "UIElement",
    "generate_task",
    "parse_action",
    "parse_screen",
    "render_screen",
    "task_from_id",
]

DEVICE = "creditgym/Device-v0"

register(DEVICE, "creditgym.envs.device:DeviceEnv", description="simulated phone control with AndroidWorld-style actions",
         expert=device_expert, random=device_random,
         difficulties={"easy": {"difficulty": 1}, "medium": {"difficulty": 2}, "hard": {"difficulty": 3}})
