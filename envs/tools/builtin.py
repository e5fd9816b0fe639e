"""The built-in tools that need no sandbox: calculator, the virtual file store and the key-value store.

Each returns the content dict of one `<tool_response>`: `{"name", "ok": True, "result"}` or
`{"name", "ok": False, "error"}`. Runtime failures are `ok: False`, never invalid actions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from creditgym.envs.tools.calculator import CalculatorError, calculate
from creditgym.envs.tools.sandbox import MAX_FILE_BYTES, MAX_FILES

__all__ = ["KV_LIST_MAX", "error", "ok", "run_builtin"]

KV_LIST_MAX = 200


def ok(name: str, result: Any) -> dict[str, Any]:
    return {"name": name, "ok": True, "result": result}


def error(name: str, message: str) -> dict[str, Any]:
    return {"name": name, "ok": False, "error": message}


def _bad_path(path: str, files: Mapping[str, str]) -> str | None:
    """Why `path` cannot name a file of the store (it must also be a file name on any host the python
    tool copies the store to), or None."""
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        return f"bad path {path!r}: use a relative path without '..', e.g. 'notes/out.txt'"
    if any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in path):
        return f"bad path {path!r}: control characters (NUL included) are not allowed in paths"
    if any(len(p.encode("utf-8")) > 255 for p in parts):
        return f"bad path {path!r}: each part of a path may hold at most 255 bytes"
    if path == "main.py":
        return "main.py is reserved for the python tool's code"
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in files:
            return f"bad path {path!r}: {'/'.join(parts[:i])!r} is a file, not a directory"
    if any(f.startswith(path + "/") for f in files):
        return f"bad path {path!r}: it is a directory of other files; pick another name"
    return None


def _files(name: str, args: Mapping[str, Any], files: dict[str, str], max_chars: int) -> dict[str, Any]:
    if name == "list_files":
        prefix = str(args.get("prefix", ""))
        return ok(name, [p for p in sorted(files) if p.startswith(prefix)])
    path = str(args["path"])
    if name == "read_file":
        if path not in files:
            return error(name, f"no such file {path!r}; files: {', '.join(sorted(files)) or '(none)'}")
        offset = int(args.get("offset", 0))
        limit = int(args.get("limit", max_chars))
        text = files[path]
        return ok(name, {"content": text[offset : offset + min(limit, max_chars)], "offset": offset,
                         "total_chars": len(text)})
    bad = _bad_path(path, files)
    if bad:
        return error(name, bad)
    content = str(args["content"])
    if len(content.encode("utf-8")) > MAX_FILE_BYTES:
        return error(name, f"content exceeds {MAX_FILE_BYTES} bytes")
    if path not in files and len(files) >= MAX_FILES:
        return error(name, f"the store already holds {MAX_FILES} files; overwrite one instead")
    files[path] = content
    return ok(name, f"wrote {len(content)} chars to {path}")


def _kv(name: str, args: Mapping[str, Any], kv: dict[str, str]) -> dict[str, Any]:
    if name == "kv_list":
        prefix = str(args.get("prefix", ""))
        keys = [k for k in sorted(kv) if k.startswith(prefix)]
        if len(keys) > KV_LIST_MAX:
            return ok(name, {"keys": keys[:KV_LIST_MAX], "more": len(keys) - KV_LIST_MAX})
        return ok(name, {"keys": keys, "more": 0})
    key = str(args["key"])
    if name == "kv_get":
        if key not in kv:
            return error(name, f"no such key {key!r}; list keys with kv_list")
        return ok(name, kv[key])
    kv[key] = str(args["value"])
    return ok(name, f"stored {key}")


def run_builtin(name: str, args: Mapping[str, Any], files: dict[str, str], kv: dict[str, str],
                max_chars: int) -> dict[str, Any]:
    """Run one built-in (non-python) tool, mutating `files` / `kv` in place."""
    if name == "calculator":
        try:
            return ok(name, calculate(str(args["expression"])))
        except CalculatorError as e:
            return error(name, str(e))
    if name in ("list_files", "read_file", "write_file"):
        return _files(name, args, files, max_chars)
    if name in ("kv_get", "kv_set", "kv_list"):
        return _kv(name, args, kv)
    raise KeyError(f"not a built-in tool: {name!r}")
