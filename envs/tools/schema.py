"""Tool declarations (OpenAI style), call parsing from `<tool_call>` blocks, schema validation.

A call is a `<tool_call>` block holding one JSON object with a string `name` and an object
`arguments` (a JSON-string `arguments` is decoded once, as in OpenAI's wire format); the format and
the `<tools>` listing follow the tool section of Qwen2.5's chat template. Arguments are checked with
`jsonschema.Draft202012Validator`; errors name the JSON path (`'expression' is a required property
at $`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from creditgym.envs.parsing import extract_json_object, find_blocks, strip_think

if TYPE_CHECKING:  # jsonschema loads with the first validation, so `import creditgym` stays fast
    import jsonschema

__all__ = [
    "CALL_FORMAT",
    "BUILTIN_DECLARATIONS",
    "ToolCall",
    "ParsedReply",
    "declaration",
    "parse_reply",
    "schema_errors",
]

CALL_FORMAT = (
    "A call is a block\n<tool_call>\n{\"name\": \"<tool>\", \"arguments\": {...}}\n</tool_call>\n"
    "and one reply may hold several. When done, reply with <answer>final answer</answer> and no tool calls."
)


def declaration(name: str, description: str, properties: Mapping[str, Any], required: Sequence[str]) -> dict[str, Any]:
    """An OpenAI-style function declaration with a closed object schema."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": dict(properties),
                "required": list(required),
                "additionalProperties": False,
            },
        },
    }


_STR = {"type": "string"}
_PATH = {"type": "string", "minLength": 1, "maxLength": 200}

BUILTIN_DECLARATIONS: dict[str, dict[str, Any]] = {
    "calculator": declaration(
        "calculator",
        "Evaluate an arithmetic expression: numbers, + - * / // % **, parentheses, "
        "sqrt abs round min max floor ceil log exp.",
        {"expression": {"type": "string", "minLength": 1, "maxLength": 2000}},
        ["expression"],
    ),
    "python": declaration(
        "python",
        "Run Python 3 code in a sandbox (no network); the files are in the working directory. "
        "Returns stdout, stderr, exit_code and timed_out. Print what you need.",
        {"code": {"type": "string", "minLength": 1, "maxLength": 20000}},
        ["code"],
    ),
    "list_files": declaration(
        "list_files", "List the files, optionally those whose path starts with prefix.", {"prefix": _STR}, []
    ),
    "read_file": declaration(
        "read_file",
        "Read a text file; offset and limit count characters.",
        {"path": _PATH, "offset": {"type": "integer", "minimum": 0}, "limit": {"type": "integer", "minimum": 1}},
        ["path"],
    ),
    "write_file": declaration(
        "write_file",
        "Create or overwrite a text file.",
        {"path": _PATH, "content": {"type": "string", "maxLength": 1_000_000}},
        ["path", "content"],
    ),
    "kv_get": declaration("kv_get", "Get the value stored under key.", {"key": {"type": "string", "minLength": 1}}, ["key"]),
    "kv_set": declaration(
        "kv_set", "Store value under key.", {"key": {"type": "string", "minLength": 1}, "value": _STR}, ["key", "value"]
    ),
    "kv_list": declaration("kv_list", "List keys, optionally those starting with prefix.", {"prefix": _STR}, []),
}

# tool-set name (the env's `tools=` entries) -> the tools it adds
TOOL_GROUPS: dict[str, tuple[str, ...]] = {
    "calculator": ("calculator",),
    "python": ("python",),
    "files": ("list_files", "read_file", "write_file"),
    "kv": ("kv_get", "kv_set", "kv_list"),
}


@dataclass(frozen=True)
class ToolCall:
    """One parsed call: tool `name` and its `arguments` (already schema-checked)."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def canonical(self) -> str:
        return json.dumps({"name": self.name, "arguments": self.arguments}, sort_keys=True, ensure_ascii=True)


@dataclass(frozen=True)
class ParsedReply:
    """A well-formed reply: either `calls` (run in order) or a final `answer`."""

    calls: tuple[ToolCall, ...] = ()
    answer: str | None = None


def _path(error: jsonschema.ValidationError) -> str:
    out = "$"
    for p in error.absolute_path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def schema_errors(schema: Mapping[str, Any], arguments: Any, limit: int = 3) -> list[str]:
    """The first `limit` validation errors of `arguments` as `message at $.path` strings."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(arguments), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{e.message} at {_path(e)}" for e in errors[:limit]]


def _invalid(problem: str) -> str:
    return f"Invalid reply: {problem}\n{CALL_FORMAT}"


def _clean(value: Any) -> Any:
    """Arguments with every lone surrogate (a JSON escape such as "\\ud800" decodes to one) replaced by
    U+FFFD: they cannot be encoded as UTF-8, so they would break file writes and observations."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace") if _has_surrogate(value) else value
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)




def parse_reply(
    text: str, declarations: Mapping[str, Mapping[str, Any]], max_calls: int
) -> ParsedReply | str:
    """Parse an action into calls or an answer; a string return is the invalid-action message.

    `declarations` maps tool name -> declaration. Rules (ENVS.md section 3): `<think>` is ignored;
    >= 1 `<tool_call>` block runs calls, else an `<answer>` block ends the episode; both in one reply,
    neither, malformed JSON, unknown tools, schema failures and more than `max_calls` calls are invalid.
    """
    body = strip_think(text)
    calls = find_blocks(body, ["tool_call"])
    answers = find_blocks(body, ["answer"])
    if calls and answers:
        return _invalid("the reply holds both tool calls and an <answer>; call tools or answer, not both.")
    if not calls:
        if answers:
            answer = " ".join(answers[0].body.split())
            if not answer:
                return _invalid("the <answer> block is empty; write the final answer inside it, e.g. <answer>42</answer>.")
            return ParsedReply(answer=answer)
        if "<tool_call>" in body:
            return _invalid("a <tool_call> block is not closed with </tool_call>.")
        return _invalid("no <tool_call> block and no <answer> block.")
    if len(calls) > max_calls:
        return _invalid(f"{len(calls)} tool calls in one reply; at most {max_calls} are allowed (none were run).")
    parsed: list[ToolCall] = []
    names = ", ".join(declarations)
    for i, block in enumerate(calls, 1):
        where = f"tool call {i}" if len(calls) > 1 else "the tool call"
        if not block.body.strip().startswith("{"):
            return _invalid(f"{where} must hold one JSON object, e.g. {{\"name\": \"calculator\", \"arguments\": {{...}}}}.")
        obj, err = extract_json_object(block.body)
        if err is not None:
            return _invalid(f"{where} is not valid JSON: {err}.")
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return _invalid(f"{where} needs a string \"name\".")
        name, args = obj["name"], obj.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError as e:
                return _invalid(f"{where}: \"arguments\" is a string that is not valid JSON: {e}.")
        if name not in declarations:
            return _invalid(f"unknown tool {name!r} in {where}; available tools: {names}.")
        if not isinstance(args, dict):
            return _invalid(f"{where}: \"arguments\" must be a JSON object, got {type(args).__name__}.")
        args = _clean(args)
        schema = declarations[name]["function"].get("parameters") or {"type": "object"}
        errs = schema_errors(schema, args)
        if errs:
            return _invalid(f"{where} to {name!r} has bad arguments: " + "; ".join(errs) + ".")
        parsed.append(ToolCall(name, args))
    return ParsedReply(calls=tuple(parsed))
