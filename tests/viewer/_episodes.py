"""Hand-built and collected episodes shared by the viewer tests."""

from __future__ import annotations

from creditgym import Episode, Turn
from creditgym.agents import Collector, ScriptedPolicy

EOS = 260  # the byte tokenizer's <|im_end|>
ACTIONS = ("search[paris]", "answer[é42]", "look ✓ ok")


def turn(text: str, k: int, reward: float = 0.0, **kw) -> Turn:
    ids = [*text.encode(), EOS]
    return Turn(obs_ids=list(f"obs {k}".encode()), action_ids=ids, action_logprobs=[-0.25] * len(ids),
                action_text=text, obs_text=f"observation {k}", reward=reward, state_key=f"s{k}", **kw)  # fmt: skip


def hand_built(groups: int = 2, size: int = 4, turns: int = 2, **meta) -> list[Episode]:
    """`groups` x `size` byte-tokenized episodes; episode i of a group succeeds when i is odd."""
    eps = []
    for g in range(groups):
        for i in range(size):
            ts = [turn(ACTIONS[(g + i + k) % 3], k, reward=float(i % 2) if k == turns - 1 else 0.0,
                       probe={"gold": 0.25 * k}) for k in range(turns)]  # fmt: skip
            eps.append(Episode(turns=tuple(ts), task_id=f"t{g}", group_id=f"g{g}", episode_id=f"e{g}_{i}",
                               outcome={"success": float(i % 2)}, probe0={"gold": 0.0}, meta=dict(meta)))  # fmt: skip
    return eps


FAMILIES = ("creditgym/Search-v0", "creditgym/SelfSearch-v0", "creditgym/Tools-v0", "creditgym/Device-v0",
            "creditgym/RedTeam-v0", "creditgym/RedTeamSelfPlay-v0")  # fmt: skip


def collected(env_id: str, groups: int = 2, size: int = 2) -> list[Episode]:
    """A few scripted-expert episodes (noisy, so outcomes differ) of `env_id`; both roles for self-play."""
    if "SelfPlay" in env_id:
        roles = {r: ScriptedPolicy.for_env(env_id, role=r, epsilon=0.3) for r in ("attacker", "defender")}
        col = Collector(None, env_id, group_size=size, policies=roles)
    else:
        col = Collector(ScriptedPolicy.for_env(env_id, epsilon=0.3), env_id, group_size=size)
    try:
        return col.collect(num_groups=groups, seed=0)
    finally:
        col.close()
