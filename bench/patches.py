"""Candidate performance fixes to files the benchmark does not own, applied only inside a benchmark server process.

Each patch is the smallest change that shows what a fix would gain; ``python -m bench.experiments`` measures
Mandate with and without it, side by side with the bare server, and docs/performance.md says where the real change
belongs. Nothing here is imported by the server itself.

- ``input-schema``: give the low-level ``Server`` a ``get_tool_input_schema`` (server/mcp_server.py). Without it,
  the SDK's 2026-07-28 entry validates ``Mcp-Param-*`` headers by running the whole tools/list handler before
  every tools/call that has arguments, and Mandate's tools/list writes an audit record: two transactions per call.
- ``sqlite-write-lock``: on SQLite, run transactions one at a time per process (an ``asyncio.Lock`` in
  ``Database.run_in_transaction``, server/storage/database.py). Concurrent ``BEGIN IMMEDIATE`` otherwise meet
  SQLITE_BUSY, and SQLite's busy handler sleeps (1, 2, 5, 10 ... 100 ms) instead of queueing.
- ``sqlite-inline``: run SQLite statements on the event loop's thread instead of aiosqlite's worker thread
  (server/storage/database.py would use a small in-loop driver, or SQLAlchemy's sync engine for SQLite). Every
  aiosqlite operation is a round trip between two threads (a queue, a future, a self-pipe write to wake the loop):
  about 25 of them per tools/call, which on this virtual machine cost more than the SQL itself. A statement on
  SQLite in WAL mode with ``synchronous=NORMAL`` takes microseconds, and one writer per process (with
  ``sqlite-write-lock``) never waits for the lock, so blocking the loop for it is cheaper than the hop. (Another
  *process* writing the same file would make a statement wait up to ``busy_timeout`` on the loop: that deployment
  wants PostgreSQL anyway.)
- ``compact-output-schema``: the refusal and pending-approval branches of every tool's ``outputSchema`` without
  ``title`` and ``description`` keys (server/catalog.py ``_output_schema``). Those branches repeat in each of the
  1,000 tools and make Mandate's tools/list 2.5 times the bytes of the bare server's.
- ``list-cache``: answer a 2026-07-28 tools/list from bytes serialised once per (scope set, protocol version),
  still writing its audit record (server/http/bearer.py, or an ASGI layer of its own next to it). The SDK
  otherwise rebuilds and re-serialises every tool definition on every listing, three passes over ~2 MB for 1,000
  tools.
- ``gc-freeze``: ``gc.freeze()`` once the app is built (server/cli/serve.py), so the start-up heap (catalog,
  schemas, SQLAlchemy and pydantic machinery) is never traversed again by the cyclic collector; a full collection
  otherwise stalls one request for tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

PATCHES = ("input-schema", "sqlite-write-lock", "gc-freeze", "sqlite-inline", "compact-output-schema", "list-cache")


def apply(names: Iterable[str]) -> list[str]:
    """Apply the named patches (before the app is built); returns the names of those that need a later step."""
    later: list[str] = []
    for name in names:
        if name == "input-schema":
            _input_schema()
        elif name == "sqlite-write-lock":
            _sqlite_write_lock()
        elif name == "compact-output-schema":
            _compact_output_schema()
        elif name == "list-cache":
            _list_cache()
        elif name == "sqlite-inline":
            _sqlite_inline()
        elif name == "gc-freeze":
            later.append(name)
        else:
            raise ValueError(f"unknown patch {name!r}; known: {', '.join(PATCHES)}")
    return later


def after_start(names: Iterable[str]) -> None:
    """The steps that run once the app is built and serving."""
    if "gc-freeze" in names:
        gc.collect()
        gc.freeze()


def _input_schema() -> None:
    import server.app as app_module

    original = app_module.build_server

    def build_server(mandate: Any, credentials: Any) -> Any:
        server = original(mandate, credentials)

        def input_schema(name: str) -> dict[str, Any] | None:
            entry = mandate.catalog.get(name)
            return None if entry is None else entry.definition.input_schema

        server.get_tool_input_schema = input_schema
        return server

    app_module.build_server = build_server


def _sqlite_write_lock() -> None:
    from server.storage.database import Database

    original = Database.run_in_transaction
    locks: dict[int, asyncio.Lock] = {}

    async def run_in_transaction(self: Database, work: Callable[[Any], Awaitable[T]]) -> T:
        if not self.is_sqlite:
            return await original(self, work)
        lock = locks.setdefault(id(self), asyncio.Lock())
        async with lock:
            return await original(self, work)

    Database.run_in_transaction = run_in_transaction  # type: ignore[method-assign]


def _sqlite_inline() -> None:
    import aiosqlite
    import aiosqlite.core as core

    original_connect = aiosqlite.connect

    def connect(database: Any, **kwargs: Any) -> Any:
        # the worker thread still opens and closes the connection; statements run on the loop's thread
        return original_connect(database, **{**kwargs, "check_same_thread": False})

    async def _execute(self: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    aiosqlite.connect = connect
    core.connect = connect
    core.Connection._execute = _execute  # type: ignore[method-assign]


def _strip(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip(v) for k, v in schema.items() if k not in ("title", "description")}
    if isinstance(schema, list):
        return [_strip(v) for v in schema]
    return schema


def _compact_output_schema() -> None:
    import server.catalog as catalog

    original = catalog._output_schema

    def output_schema(spec: Any) -> dict[str, Any]:
        schema = original(spec)
        result_name = spec.result_model.__name__
        defs = schema.get("$defs", {})
        schema["$defs"] = {name: (body if name == result_name else _strip(body)) for name, body in defs.items()}
        return schema

    catalog._output_schema = output_schema


def _list_cache() -> None:
    import json

    from server.http import bearer

    guard_call = bearer.BearerGuard.__call__
    cache: dict[tuple[frozenset[str], str], bytes] = {}

    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
        if scope["type"] != "http" or scope.get("method") != "POST" or headers.get(b"mcp-method") != b"tools/list":
            await guard_call(self, scope, receive, send)
            return
        body = await bearer._read_body(receive)
        replay = bearer._replay(body or b"", receive)
        token = bearer._bearer_token(scope)
        version = headers.get(b"mcp-protocol-version", b"").decode()
        try:
            message = json.loads(body or b"")
            principal = await self.verifier.verify(token) if token else None
        except Exception:  # noqa: BLE001 - let the real path answer
            principal = None
        if principal is None or not isinstance(message, dict) or (message.get("params") or {}).get("cursor"):
            await guard_call(self, scope, replay, send)
            return
        key = (principal.scopes, version)
        cached = cache.get(key)
        if cached is None:
            captured: list[bytes] = []

            async def capture(event: Any) -> None:
                if event["type"] == "http.response.body":
                    captured.append(event.get("body", b""))
                await send(event)

            await guard_call(self, scope, replay, capture)
            payload = b"".join(captured)
            head, sep, rest = payload.partition(b',"result":')
            if sep and head.startswith(b'{"jsonrpc":"2.0","id":'):
                cache[key] = rest
            return
        # the audit record of the listing, exactly as the real path writes it
        from server.enforcement import CallInfo

        client = scope.get("client")
        await self._bench_enforcer.list_tools(principal, CallInfo("http", client[0] if client else None))
        payload = b'{"jsonrpc":"2.0","id":' + json.dumps(message.get("id")).encode() + b',"result":' + cached
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    bearer.BearerGuard.__call__ = call  # type: ignore[method-assign]

    import server.app as app_module

    original_build = app_module.build_http_app

    def build_http_app(mandate: Any) -> Any:
        bearer.BearerGuard._bench_enforcer = mandate.enforcer  # type: ignore[attr-defined]
        return original_build(mandate)

    app_module.build_http_app = build_http_app
