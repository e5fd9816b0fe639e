"""Hypothesis strategies for hand-built episodes, shared by the core tests."""

from __future__ import annotations

from hypothesis import strategies as st

from creditgym import Episode, Turn

_ids = st.lists(st.integers(0, 50), min_size=0, max_size=4)
_action_ids = st.lists(st.integers(0, 50), min_size=1, max_size=4)
_floats = st.floats(-10, 10, allow_nan=False, width=32)


@st.composite
def turns(draw):
    action = draw(_action_ids)
    mask = draw(st.lists(st.integers(0, 1), min_size=len(action), max_size=len(action)))
    logp = draw(st.lists(st.floats(-20, 0, width=32), min_size=len(action), max_size=len(action)))
    return Turn(
        obs_ids=tuple(draw(_ids)),
        action_ids=tuple(action),
        action_logprobs=tuple(logp),
        action_loss_mask=tuple(mask),
        action_text=draw(st.text(max_size=8)),
        obs_text=draw(st.text(max_size=8)),
        reward=draw(_floats),
        state_key=draw(st.sampled_from(["s0", "s1", "s2", "s3"])),
        invalid=draw(st.booleans()),
        probe={"gold": draw(st.floats(0, 1))},
        info={"k": draw(st.integers(-3, 3))},
    )


@st.composite
def episodes(draw, min_turns=0, max_turns=4):
    ts = draw(st.lists(turns(), min_size=min_turns, max_size=max_turns))
    truncated = draw(st.booleans())
    return Episode(
        turns=tuple(ts),
        episode_id=draw(st.text("abcdef0123", min_size=1, max_size=6)),
        task_id=draw(st.sampled_from(["t/a", "t/b"])),
        group_id=draw(st.sampled_from(["g0", "g1", "g2"])),
        seed=draw(st.one_of(st.none(), st.integers(0, 100))),
        role=draw(st.sampled_from(["agent", "attacker", "defender"])),
        terminated=not truncated,
        truncated=truncated,
        outcome={"success": float(draw(st.booleans()))},
        probe0={"gold": draw(st.floats(0, 1))},
        final_obs_text=draw(st.text(max_size=5)),
        final_obs_ids=tuple(draw(_ids)),
        meta={"options": {"task_id": "t/a"}},
    )
