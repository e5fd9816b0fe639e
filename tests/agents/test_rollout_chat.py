"""ChatRenderer: template deltas on append-only and rewriting templates; char spans to token masks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from creditgym.agents import ByteTokenizer
from creditgym.agents.rollout_chat import ChatRenderer, char_mask_to_token_mask, render_ids

TOK = ByteTokenizer()
U = [{"role": "user", "content": "hello"}]


def test_closing_ids_and_tool_role_detected():
    r = ChatRenderer(TOK)
    assert r.closing_ids == [TOK.im_end_id, *TOK.encode("\n")]
    assert r.has_tool_role
    assert r.remaining_closing([1, 2, TOK.im_end_id]) == TOK.encode("\n")
    assert r.remaining_closing([1, 2]) == r.closing_ids
    assert r.remaining_closing([TOK.im_end_id, 10]) == []


def test_delta_exact_prefix_path():
    r = ChatRenderer(TOK)
    ctx = r.first_ids(U)
    action = [*TOK.encode("hi"), TOK.im_end_id]  # the template's own tokens for the reply
    msgs = [*U, {"role": "assistant", "content": "hi"}]
    new = [{"role": "user", "content": "next"}]
    delta = r.delta_ids([*ctx, *action], msgs, new, action)
    assert [*ctx, *action, *delta] == render_ids(TOK, [*msgs, *new], True)


def test_delta_after_stop_string_adds_closing_tokens():
    r = ChatRenderer(TOK)
    ctx = r.first_ids(U)
    action = TOK.encode("<search>q</search>")  # stopped on a stop string: no end-of-turn token sampled
    msgs = [*U, {"role": "assistant", "content": "<search>q</search>"}]
    delta = r.delta_ids([*ctx, *action], msgs, [{"role": "user", "content": "doc"}], action)
    assert delta[:2] == r.closing_ids
    assert TOK.decode(delta) == "<|im_end|>\n<|im_start|>user\ndoc<|im_end|>\n<|im_start|>assistant\n"


class DropHistoryTokenizer(ByteTokenizer):
    """A template that rewrites history (drops the content of earlier assistant turns, as reasoning
    templates do), so neither prefix check holds on a real conversation."""

    def apply_chat_template(self, messages, **kw):
        last_user = max(i for i, m in enumerate(messages) if m["role"] != "assistant")
        msgs = [
            {**m, "content": "" if m["role"] == "assistant" and i < last_user and m["content"] != "y" else m["content"]}
            for i, m in enumerate(messages)
        ]
        return super().apply_chat_template(msgs, **kw)


def test_delta_falls_back_to_dummy_prefix_for_rewriting_templates():
    tok = DropHistoryTokenizer()
    r = ChatRenderer(tok)
    ctx = r.first_ids(U)
    action = tok.encode("abc")
    msgs = [*U, {"role": "assistant", "content": "abc"}]
    delta = r.delta_ids([*ctx, *action], msgs, [{"role": "user", "content": "doc"}], action)
    assert tok.decode(delta) == "<|im_end|>\n<|im_start|>user\ndoc<|im_end|>\n<|im_start|>assistant\n"


def test_system_prompt_and_observation_messages():
    r = ChatRenderer(TOK, system_prompt="be brief")
    assert r.first_messages("q")[0] == {"role": "system", "content": "be brief"}
    msgs = r.observation_messages("obs", "tool", {"tool_results": [{"name": "a", "ok": True}, "raw"]})
    assert msgs == [{"role": "tool", "content": '{"name": "a", "ok": true}'}, {"role": "tool", "content": "raw"}]
    assert r.observation_messages("obs", "tool", {}) == [{"role": "user", "content": "obs"}]
    assert r.observation_messages("obs", "user", {"tool_results": ["x"]}) == [{"role": "user", "content": "obs"}]


def test_char_mask_hand_example():
    ids = TOK.encode("ab<i>cd</i>")
    assert char_mask_to_token_mask(TOK, ids, [[5, 7]]) == [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1]
    assert char_mask_to_token_mask(TOK, ids, []) == [1] * len(ids)
    # a two-byte character spans two tokens; both belong to the character's range
    ids = TOK.encode("aéb")
    assert char_mask_to_token_mask(TOK, ids, [[1, 2]]) == [1, 0, 0, 1]


@given(st.text(alphabet="ab<>/é", max_size=20), st.integers(0, 20), st.integers(0, 20))
def test_char_mask_matches_byte_reference(text, s, e):
    s, e = min(s, len(text)), min(max(s, e), len(text))
    ids = TOK.encode(text)
    mask = char_mask_to_token_mask(TOK, ids, [[s, e]])
    # reference: each byte belongs to the character it encodes
    owner = [c for c, ch in enumerate(text) for _ in ch.encode("utf-8")]
    assert mask == [0 if s <= owner[t] < e else 1 for t in range(len(ids))]
