"""From recorded model calls to a creditgym Episode: the gateway's pure half (docs/scale.md, "Gateway").

A call whose prompt token ids start with the previous call's prompt + completion continues the
conversation, the new tokens being an observation; one that does not (the agent rewrote or cut its
history, the chat template re-rendered a completion differently from the sampled ids, a second
thread) starts a new row. A session whose calls all continue is one `history="full"` Episode with one
Turn per call. A session with several rows is a per-turn-rows Episode (`history="custom"`) with one
Turn per row: the row's first prompt is its `obs_ids`, and its action is every completion of the row
with the observation tokens between them kept in place at loss mask 0 and logprob 0, so each row is
exactly one context the model saw, trained once. Calls without token ids from the upstream mark the
episode `train_excluded="missing_token_ids"` (never guessed).
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from creditgym.trajectory import EXCLUDED, Episode, Turn

__all__ = [
    "UNUSABLE",
    "CallRecord",
    "StreamRecorder",
    "assemble_episode",
    "call_record",
    "choice_tokens",
    "prompt_ids",
    "reply_records",
    "split_rows",
]

_TOKEN_ID = re.compile(r"^token_id:(\d+)$")


@dataclass(frozen=True)
class CallRecord:
    """One model call as the upstream saw and sampled it: the exact prompt and completion token ids
    and the completion's sampling logprobs (one per completion token)."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    text: str = ""
    finish_reason: str = ""
    endpoint: str = "chat"
    has_ids: bool = True
    """False when the upstream returned no token ids (prompt or completion): the call cannot be trained on."""


# ---------------------------------------------------------------------- reading a reply (pure)


def choice_tokens(choice: Mapping[str, Any], chat: bool) -> tuple[list[int] | None, list[float]]:
    """(completion token ids or None, logprobs) of one reply choice, full or one streamed chunk: ids
    from vLLM's `token_ids`, else from `token_id:N` logprob tokens (`return_tokens_as_token_ids`)."""
    lp = choice.get("logprobs") or {}
    if chat:
        entries = lp.get("content") or []
        tokens = [str(e.get("token", "")) for e in entries]
        values = [float(e.get("logprob") or 0.0) for e in entries]
    else:
        tokens = [str(t) for t in lp.get("tokens") or []]
        values = [float(v) if v is not None else 0.0 for v in lp.get("token_logprobs") or []]
    raw = choice.get("token_ids")
    ids: list[int] | None = None
    if isinstance(raw, list):
        ids = [int(i) for i in raw]
    elif tokens:
        matches = [_TOKEN_ID.match(t) for t in tokens]
        if all(matches):
            ids = [int(m.group(1)) for m in matches if m]
    return ids, values


def prompt_ids(
    data: Mapping[str, Any], choice: Mapping[str, Any], body: Mapping[str, Any]
) -> list[int] | None:
    """The prompt token ids the upstream reported (top level for chat, per choice for completions),
    else a completions prompt given as token ids."""
    raw = data.get("prompt_token_ids") or choice.get("prompt_token_ids")
    if isinstance(raw, list):
        return [int(i) for i in raw]
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(i, int) for i in prompt):
        return [int(i) for i in prompt]
    return None


def call_record(
    prompt: list[int] | None, ids: list[int] | None, lps: list[float], text: str, finish: str, chat: bool
) -> CallRecord:
    has_ids = prompt is not None and ids is not None
    ids = ids or []
    if len(lps) != len(ids):  # a server that gave ids but no logprobs: 0.0 is "unknown" (Turn docstring)
        lps = [0.0] * len(ids)
    return CallRecord(
        tuple(prompt or ()), tuple(ids), tuple(lps), text, finish, "chat" if chat else "completions", has_ids
    )


_UNREADABLE = (TypeError, ValueError, AttributeError, KeyError)
UNUSABLE = CallRecord((), (), (), has_ids=False)
"""What a reply the gateway cannot read is recorded as: its episode is then excluded, never guessed."""


def reply_records(data: Any, body: Mapping[str, Any], chat: bool) -> list[CallRecord] | None:
    """One CallRecord per choice of a full (not streamed) reply; None when its shape is unreadable."""
    try:
        return [
            call_record(prompt_ids(data, c, body), *choice_tokens(c, chat),
                        ((c.get("message") or {}).get("content") if chat else c.get("text")) or "",
                        str(c.get("finish_reason")), chat)
            for c in data["choices"]
        ]  # fmt: skip
    except _UNREADABLE:
        return None


@dataclass
class StreamRecorder:
    """Collects each choice's ids, logprobs and text from a reply's stream events (`add` per event)."""

    body: Mapping[str, Any]
    chat: bool
    parts: dict[int, dict[str, Any]] = field(default_factory=dict)
    prompt: list[int] | None = None
    readable: bool = True

    def add(self, data: Any) -> bool:
        """Record one parsed event; False (and the stream marked unusable) when it cannot be read."""
        try:
            for choice in data.get("choices") or []:
                p = self.parts.setdefault(
                    int(choice.get("index", 0)),
                    {"ids": [], "lps": [], "text": [], "finish": "", "seen": False},
                )
                ids, lps = choice_tokens(choice, self.chat)
                p["seen"] |= ids is not None
                p["ids"] += ids or []
                p["lps"] += lps
                piece = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
                p["text"].append(piece or "")
                p["finish"] = choice.get("finish_reason") or p["finish"]
                self.prompt = prompt_ids(data, choice, self.body) or self.prompt
        except _UNREADABLE:
            self.readable = False
        return self.readable

    def records(self) -> list[CallRecord]:
        if not self.readable:
            return [UNUSABLE]
        return [call_record(self.prompt, p["ids"] if p["seen"] else None, p["lps"], "".join(p["text"]),
                            str(p["finish"]), self.chat) for _, p in sorted(self.parts.items())]  # fmt: skip


# ---------------------------------------------------------------------- assembly (pure)


def _continues(prev: CallRecord, call: CallRecord) -> bool:
    n = len(prev.prompt_ids) + len(prev.completion_ids)
    return (len(call.prompt_ids) >= n and call.prompt_ids[: len(prev.prompt_ids)] == prev.prompt_ids
            and call.prompt_ids[len(prev.prompt_ids) : n] == prev.completion_ids)  # fmt: skip


def split_rows(calls: Sequence[CallRecord]) -> list[list[CallRecord]]:
    """Calls grouped into rows: a call joins the current row when its prompt extends the row's last
    prompt + completion, else it starts a new row. Calls without completion tokens are left out."""
    rows: list[list[CallRecord]] = []
    for call in calls:
        if not call.completion_ids:
            continue
        if rows and _continues(rows[-1][-1], call):
            rows[-1].append(call)
        else:
            rows.append([call])
    return rows


def _row_turn(row: Sequence[CallRecord]) -> Turn:
    """One Turn for a row of several calls: the observation tokens between completions sit inside the
    action at loss mask 0 and logprob 0, so the row's tokens stay in the order the model saw them."""
    ids: list[int] = []
    lps: list[float] = []
    mask: list[int] = []
    end = len(row[0].prompt_ids)
    for call in row:
        ext = call.prompt_ids[end:] if ids else ()
        ids += [*ext, *call.completion_ids]
        lps += [0.0] * len(ext) + list(call.logprobs)
        mask += [0] * len(ext) + [1] * len(call.completion_ids)
        end = len(call.prompt_ids) + len(call.completion_ids)
    return Turn(obs_ids=row[0].prompt_ids, action_ids=tuple(ids), action_logprobs=tuple(lps), action_loss_mask=tuple(mask),
                action_text="".join(c.text for c in row), info={"calls": len(row)})  # fmt: skip


def assemble_episode(
    calls: Sequence[CallRecord],
    reward: float,
    *,
    session_id: str = "",
    task_id: str = "",
    group_id: str = "g0",
    meta: Mapping[str, Any] | None = None,
    errors: int = 0,
) -> Episode:
    """The Episode of one session (module docstring, "Assembly"); `reward` goes on the last turn."""
    rows = split_rows(calls)
    if len(rows) <= 1:  # one conversation: a turn per call, observations are the prompt deltas
        history, turns, end = "full", [], 0
        for call in rows[0] if rows else []:
            turns.append(Turn(obs_ids=call.prompt_ids[end:], action_ids=call.completion_ids,
                              action_logprobs=call.logprobs, action_text=call.text,
                              info={"finish_reason": call.finish_reason}))  # fmt: skip
            end = len(call.prompt_ids) + len(call.completion_ids)
    else:
        history, turns = "custom", [_row_turn(r) for r in rows]
    if turns:
        turns[-1] = dataclasses.replace(turns[-1], reward=float(reward))
    info = {"session_id": session_id, "calls": len(calls), "rows": len(rows), "errors": int(errors)}
    full_meta: dict[str, Any] = {**dict(meta or {}), "gateway": info}
    if any(not c.has_ids for c in calls):
        full_meta[EXCLUDED] = "missing_token_ids"
    return Episode(turns=tuple(turns), episode_id=f"{session_id}-{uuid.uuid4().hex[:8]}", task_id=task_id,
                   group_id=group_id, outcome={"reward": float(reward)}, meta=full_meta, history=history)  # fmt: skip
