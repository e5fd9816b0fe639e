"""Tools call parsing: JSON errors, schema errors with paths, string arguments, call+answer."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from creditgym.envs.tools.schema import BUILTIN_DECLARATIONS, ParsedReply, parse_reply, schema_errors

DECLS = {k: BUILTIN_DECLARATIONS[k] for k in ("calculator", "read_file", "kv_get")}


def call(name: str, args: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


def test_calls_parse_in_order_and_think_is_ignored() -> None:
    text = "<think>plan <answer>no</answer></think>" + call("calculator", {"expression": "1+1"}) + call("kv_get", {"key": "a"})
    out = parse_reply(text, DECLS, 4)
    assert isinstance(out, ParsedReply)
    assert [c.name for c in out.calls] == ["calculator", "kv_get"]
    assert out.answer is None


def test_answer() -> None:
    out = parse_reply("<answer>  42 \n</answer>", DECLS, 4)
    assert out == ParsedReply(answer="42")


def test_string_arguments_are_decoded_once() -> None:
    text = '<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"2*3\\"}"}</tool_call>'
    out = parse_reply(text, DECLS, 4)
    assert isinstance(out, ParsedReply) and out.calls[0].arguments == {"expression": "2*3"}


def test_call_and_answer_is_invalid() -> None:
    msg = parse_reply(call("calculator", {"expression": "1"}) + "<answer>1</answer>", DECLS, 4)
    assert isinstance(msg, str) and "both tool calls and an <answer>" in msg and "<tool_call>" in msg


def test_json_error_names_line_and_column() -> None:
    msg = parse_reply('<tool_call>\n{"name": "calculator", "arguments": {"expression": 1+}}\n</tool_call>', DECLS, 4)
    assert isinstance(msg, str) and "not valid JSON" in msg and "line 1 column" in msg


def test_unknown_tool_lists_tools() -> None:
    msg = parse_reply(call("calc", {}), DECLS, 4)
    assert isinstance(msg, str)
    assert "unknown tool 'calc'" in msg and "calculator, read_file, kv_get" in msg


def test_schema_failure_names_path() -> None:
    msg = parse_reply(call("calculator", {}), DECLS, 4)
    assert isinstance(msg, str) and "'expression' is a required property at $" in msg
    msg = parse_reply(call("read_file", {"path": "a", "limit": "ten"}), DECLS, 4)
    assert isinstance(msg, str) and "'ten' is not of type 'integer' at $.limit" in msg


def test_schema_errors_first_three() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"},
                                               "d": {"type": "integer"}}}
    errs = schema_errors(schema, {"a": "x", "b": "x", "c": "x", "d": "x"})
    assert errs == ["'x' is not of type 'integer' at $.a", "'x' is not of type 'integer' at $.b",
                    "'x' is not of type 'integer' at $.c"]


def test_too_many_calls_run_none() -> None:
    msg = parse_reply(call("kv_get", {"key": "a"}) * 5, DECLS, 4)
    assert isinstance(msg, str) and "5 tool calls in one reply; at most 4" in msg


def test_no_block_empty_answer_unclosed_and_bad_shapes() -> None:
    for text, part in [
        ("just text", "no <tool_call> block and no <answer> block"),
        ("<answer> </answer>", "<answer> block is empty"),
        ('<tool_call>{"name": "calculator"', "not closed"),
        ('<tool_call>{"name": 3}</tool_call>', 'string "name"'),
        ('<tool_call>[1, 2]</tool_call>', "one JSON object"),
        ('<tool_call>{"name": "calculator", "arguments": [1]}</tool_call>', "must be a JSON object"),
        ('<tool_call>{"name": "calculator", "arguments": "{bad"}</tool_call>', "string that is not valid JSON"),
    ]:
        msg = parse_reply(text, DECLS, 4)
        assert isinstance(msg, str) and part in msg, (text, msg)
        assert "A call is a block" in msg


@given(st.text(max_size=300))
def test_parse_reply_is_total(text: str) -> None:
    out = parse_reply(text, DECLS, 4)
    assert isinstance(out, (str, ParsedReply))
