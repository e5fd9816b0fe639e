"""MCP client (`creditgym[mcp]`): a local MCP server's tools become env tools (ENVS.md section 3).

`servers = [{"name": "srv", "command": "python", "args": ["server.py"]}]` (stdio) or
`[{"name": "srv", "url": "http://127.0.0.1:8765/mcp"}]` (streamable HTTP). A private thread runs an
asyncio loop; per server one task owns the transport and the `ClientSession` (anyio contexts must
be entered and left by the same task): `initialize()`, `list_tools()`, then it waits until
`close()`. Each tool becomes a declaration named `srv__{name}` with `parameters = inputSchema`;
calls are `session.call_tool(name, arguments=...)` under `timeout_s`, text items of the result
joined; `isError` -> `ok: False`; a dead or hanging server -> an error result, never an exception.
Written against mcp 2.3 (`Tool.input_schema`, `CallToolResult.is_error`), reading the 1.x
camelCase names as a fallback.

Limits (docs/backends.md): start-up is bounded by `start_timeout_s` and every call by `timeout_s` of
wall clock, whatever the server does. Over HTTP each response body is cut at `max_body_bytes` (the
SDK would read a JSON body whole) and compressed bodies are not asked for; a stdio server's messages
are not capped here (it is a local process the user started).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MCPClient", "MCPError"]

log = logging.getLogger(__name__)


class MCPError(RuntimeError):
    """An MCP server could not be started or listed; the message names the server and the fix."""


def _capped_http_client(max_body_bytes: int) -> Any:
    """An httpx2.AsyncClient (the MCP SDK's HTTP library) whose response bodies fail with a
    ReadError past `max_body_bytes`, with the SDK's default timeouts."""
    import httpx2
    from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT

    class CappedStream(httpx2.AsyncByteStream):
        def __init__(self, inner: Any):
            self.inner = inner

        async def __aiter__(self) -> Any:
            n = 0
            async for chunk in self.inner:
                n += len(chunk)
                if n > max_body_bytes:
                    raise httpx2.ReadError(f"response body exceeds max_body_bytes={max_body_bytes}")
                yield chunk

        async def aclose(self) -> None:
            await self.inner.aclose()

    class CappedTransport(httpx2.AsyncHTTPTransport):
        async def handle_async_request(self, request: Any) -> Any:
            resp = await super().handle_async_request(request)
            resp.stream = CappedStream(resp.stream)
            return resp

    return httpx2.AsyncClient(
        transport=CappedTransport(), headers={"Accept-Encoding": "identity"},
        timeout=httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT),
    )  # fmt: skip


def _describe(e: BaseException) -> str:
    """`Type: message` of the first leaf of (nested) exception groups, which the SDK's task groups
    wrap every transport error in."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}"


def _field(obj: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        if hasattr(obj, n):
            return getattr(obj, n)
    return default


class MCPClient:
    """Synchronous facade over MCP sessions; `declarations()` and `call(tool, arguments)`."""

    def __init__(self, servers: Sequence[Mapping[str, Any]], timeout_s: float = 5.0, start_timeout_s: float = 20.0,
                 max_body_bytes: int = 16 * 2**20):
        try:
            import mcp  # noqa: F401
        except ImportError as e:
            raise ImportError("mcp_servers need the MCP SDK: pip install 'creditgym[mcp]'") from e
        self.timeout_s, self.max_body_bytes = float(timeout_s), int(max_body_bytes)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="creditgym-mcp", daemon=True)
        self._thread.start()
        self._sessions: dict[str, Any] = {}
        self._stops: dict[str, asyncio.Event] = {}
        self._owners: dict[str, concurrent.futures.Future] = {}
        self._tools: dict[str, tuple[str, str, dict[str, Any]]] = {}  # env name -> (server, tool, declaration)
        try:
            for spec in servers:
                self._open(dict(spec), start_timeout_s)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ lifecycle
    def _open(self, spec: dict[str, Any], start_timeout_s: float) -> None:
        name = spec.get("name")
        if not isinstance(name, str) or not name or "__" in name:
            raise MCPError(f"each MCP server needs a 'name' without '__', got {name!r}")
        if not spec.get("command") and not spec.get("url"):
            raise MCPError(f"MCP server {name!r} needs 'command' (stdio) or 'url' (streamable HTTP)")
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._owners[name] = asyncio.run_coroutine_threadsafe(self._own(name, spec, ready), self._loop)
        try:
            tools = ready.result(timeout=start_timeout_s)
        except concurrent.futures.TimeoutError as e:
            self._owners[name].cancel()  # a server stuck mid-handshake must not hold close() as well
            raise MCPError(f"MCP server {name!r} did not initialize within {start_timeout_s} s") from e
        except Exception as e:
            raise MCPError(f"MCP server {name!r} failed to start: {_describe(e)}. Check its command/url") from e
        for tool in tools:
            tname = str(_field(tool, "name"))
            schema = _field(tool, "input_schema", "inputSchema", default=None) or {"type": "object"}
            decl = {"type": "function", "function": {
                "name": f"{name}__{tname}", "description": _field(tool, "description") or "", "parameters": dict(schema)}}
            self._tools[f"{name}__{tname}"] = (name, tname, decl)

    async def _own(self, name: str, spec: dict[str, Any], ready: concurrent.futures.Future) -> None:
        from mcp.client.session import ClientSession

        stop = asyncio.Event()
        self._stops[name] = stop
        http_client = None
        try:
            if spec.get("url"):
                from mcp.client.streamable_http import streamable_http_client

                http_client = _capped_http_client(self.max_body_bytes)
                transport = streamable_http_client(str(spec["url"]), http_client=http_client)
            else:
                from mcp.client.stdio import StdioServerParameters, stdio_client

                params = StdioServerParameters(command=str(spec["command"]), args=[str(a) for a in spec.get("args", [])],
                                               env=spec.get("env"), cwd=spec.get("cwd"))
                transport = stdio_client(params)
            async with transport as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    listed = await session.list_tools()
                    self._sessions[name] = session
                    ready.set_result(list(_field(listed, "tools", default=[])))
                    await stop.wait()
        except BaseException as e:  # report start failures to the caller; later deaths are logged
            if not ready.done():
                ready.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
            else:
                log.warning("MCP server %r stopped: %s", name, e)
        finally:
            self._sessions.pop(name, None)
            if http_client is not None:
                await http_client.aclose()

    def close(self) -> None:
        """Stop every session and the loop thread (idempotent)."""
        if not self._thread.is_alive():
            return
        for stop in list(self._stops.values()):
            self._loop.call_soon_threadsafe(stop.set)
        for fut in self._owners.values():
            try:
                fut.result(timeout=5)
            except Exception as e:  # shutdown errors of a dead server do not matter here
                log.debug("MCP owner task ended with %s", e)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    # ------------------------------------------------------------------ tools
    def declarations(self) -> dict[str, dict[str, Any]]:
        """Env tool name (`srv__tool`) -> OpenAI-style declaration."""
        return {k: v[2] for k, v in sorted(self._tools.items())}

    def call(self, env_name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Call a tool; returns the tool-response content `{"name", "ok", "result" | "error"}`."""
        server, tool, _ = self._tools[env_name]
        session = self._sessions.get(server)
        if session is None:
            return {"name": env_name, "ok": False, "error": f"MCP server {server!r} is not running"}

        async def _call() -> Any:
            return await asyncio.wait_for(session.call_tool(tool, arguments=dict(arguments)), self.timeout_s)

        fut = asyncio.run_coroutine_threadsafe(_call(), self._loop)
        try:
            result = fut.result(timeout=self.timeout_s + 2.0)
        except (concurrent.futures.TimeoutError, TimeoutError):
            fut.cancel()
            return {"name": env_name, "ok": False, "error": f"timed out after {self.timeout_s:g} s"}
        except Exception as e:  # a dead server surfaces as several exception types
            return {"name": env_name, "ok": False, "error": f"MCP server {server!r} failed: {_describe(e)}"}
        texts = [str(_field(c, "text")) for c in (_field(result, "content", default=[]) or [])
                 if _field(c, "type") == "text"]
        text = "\n".join(texts)
        if _field(result, "is_error", "isError", default=False):
            return {"name": env_name, "ok": False, "error": text or "tool reported an error"}
        return {"name": env_name, "ok": True, "result": text}
