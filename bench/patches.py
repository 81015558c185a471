"""Candidate performance fixes to files the benchmark does not own, applied only inside a benchmark server process.

Each patch is the smallest change that shows what a fix would gain; ``python -m bench.experiments`` measures
Mandate with and without it, side by side with the bare server, and docs/performance.md says where the real change
belongs. Nothing here is imported by the server itself.

- ``sqlite-inline``: run SQLite statements on the event loop's thread instead of aiosqlite's worker thread
  (server/storage/database.py would use a small in-loop driver, or SQLAlchemy's sync engine for SQLite). Every
  aiosqlite operation is a round trip between two threads (a queue, a future, a self-pipe write to wake the loop):
  about 25 of them per tools/call, which on this virtual machine cost more than the SQL itself. A statement on
  SQLite in WAL mode with ``synchronous=NORMAL`` takes microseconds, and one writer per process (with
  the SQLite write lock) never waits for the lock, so blocking the loop for it is cheaper than the hop. (Another
  *process* writing the same file would make a statement wait up to ``busy_timeout`` on the loop: that deployment
  wants PostgreSQL anyway.)
- ``list-cache``: answer a 2026-07-28 tools/list from bytes serialised once per (scope set, protocol version),
  still writing its audit record (server/http/bearer.py, or an ASGI layer of its own next to it). The SDK
  otherwise rebuilds and re-serialises every tool definition on every listing, three passes over ~2 MB for 1,000
  tools.
- ``stub-enforcer``: not a fix but a measurement: ``Enforcer.call_tool`` answers a canned result at once (no
  token-scope re-check, decision, ledger or audit record), so what is left is Mandate's HTTP surface (the bearer
  guard, the SDK's low-level ``Server``) around a call. Its distance to the bare server is what the HTTP layers
  cost; the rest of Mandate's call is the enforcer's transaction.
- ``lesion-*`` (:data:`LESIONS`): not fixes either. Each takes one piece of a refund away (the audit append, the
  sequencer's batches, the guards, the after-call metrics, tracing, garbage collection, or the whole enforcer behind
  a canned refund answer) so that ``python -m bench.lesions`` can measure what that piece costs in server CPU.
- ``timers``: wraps the call path's pieces (:data:`TIMED`) in a clock and writes each one's inclusive time per call
  on SIGUSR2 (``python -m bench.lesions --timers``): a breakdown without a profiler's per-frame cost.

The fixes measured here before they were made are in the server now (docs/performance.md): the input-schema
lookup (server/mcp_server.py), the per-process SQLite write lock (server/storage/database.py), compact output
schemas (server/catalog.py) and ``gc.freeze`` after start-up (server/cli/serve.py, and bench/serve.py as it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

LESIONS = (
    "lesion-sequencer",
    "lesion-gc",
    "lesion-after-call",
    "lesion-guards",
    "lesion-tracing",
    "lesion-audit",
    "lesion-refund-enforcer",
)
"""Not fixes: each takes one piece of a refund away, so that ``python -m bench.lesions`` can measure its CPU."""
PATCHES = ("sqlite-inline", "list-cache", "stub-enforcer", "timers", *LESIONS)


def apply(names: Iterable[str]) -> list[str]:
    """Apply the named patches (before the app is built); returns the names of those that need a later step."""
    later: list[str] = []
    for name in names:
        if name == "list-cache":
            _list_cache()
        elif name == "sqlite-inline":
            _sqlite_inline()
        elif name == "stub-enforcer":
            _stub_enforcer()
        elif name == "timers":
            _timers()
            later.append(name)
        elif name in LESIONS:
            if _lesion(name):
                later.append(name)
        else:
            raise ValueError(f"unknown patch {name!r}; known: {', '.join(PATCHES)}")
    return later


def after_start(names: Iterable[str]) -> None:
    """The steps that run once the app is built and serving."""
    import gc

    if "lesion-gc" in names:
        gc.disable()
    if "timers" in names:
        import asyncio
        import signal

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, _write_timers)


TIMED = (
    ("server.http.bearer", "BearerGuard.__call__"),
    ("mcp.server.streamable_http_manager", "StreamableHTTPASGIApp.__call__"),
    ("server.callpath.enforcer", "Enforcer.call_tool"),
    ("server.callpath.enforcer", "admit"),
    ("server.callpath.guard", "guard_refusal"),
    ("server.callpath.guard", "after_call"),
    ("server.callpath.enforcer", "Enforcer.act"),
    ("server.storage.database", "Database.run_in_transaction"),
    ("server.storage.sqlite_writer", "HeldWriter.run"),
    ("server.storage.database", "Database._attempt"),
    ("server.storage.sqlite_writer", "AsyncSession"),
    ("server.storage.sqlite_writer", "sqlite.begin_inline"),
    ("server.storage.sqlite_writer", "bind_driver"),
    ("server.storage.sqlite_writer", "flush_deferred"),
    ("server.storage.sqlite_writer", "_let_go"),
    ("sqlalchemy.ext.asyncio", "AsyncSession.close"),
    ("sqlalchemy.ext.asyncio", "AsyncSession.commit"),
    ("server.storage.sqlite", "Checkpoints.commit"),
    ("server.callpath.core", "CallPathCore.context"),
    ("server.callpath.core", "CallPathCore.gate"),
    ("tools.orders", "locked_order"),
    ("server.callpath.decide", "caller_of"),
    ("server.callpath.decide", "prepare"),
    ("server.ledger", "totals"),
    ("scopes.policy.decision", "Prepared.decide"),
    ("server.callpath.act_local", "guard.note_decision"),
    ("server.ledger", "reserve"),
    ("tools.refunds", "parse_amount"),
    ("tools.refunds", "add_refunded"),
    ("server.toolkit", "ToolContext.write"),
    ("tools.refunds", "_answer"),
    ("pydantic", "BaseModel.model_dump"),
    ("server.callpath.act_local", "decided_outcome"),
    ("server.callpath.act_local", "result_summary"),
    ("server.callpath.core", "build_record"),
    ("server.audit.chain", "append"),
    ("server.callpath.act_local", "success_result"),
    ("server.callpath.act_local", "receipt_meta"),
    ("server.audit.sequencer", "Sequencer._batch"),
)
"""What ``timers`` times, inclusive (``module``, ``attribute path``): a path that is not there is skipped."""
_TIMES: dict[str, list[int]] = {}


def _timers() -> None:
    import functools
    import importlib
    import inspect
    import time

    clock = time.perf_counter_ns
    for module_name, path in TIMED:
        try:
            owner: Any = importlib.import_module(module_name)
            *parents, attr = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            original = getattr(owner, attr)
        except (ImportError, AttributeError):
            continue
        label = path
        slot = _TIMES.setdefault(label, [0, 0])
        if inspect.iscoroutinefunction(original):

            def make_async(fn: Any, slot: list[int]) -> Any:
                @functools.wraps(fn)
                async def timed(*args: Any, **kwargs: Any) -> Any:
                    start = clock()
                    try:
                        return await fn(*args, **kwargs)
                    finally:
                        slot[0] += clock() - start
                        slot[1] += 1

                return timed

            wrapped = make_async(original, slot)
        elif callable(original):

            def make_sync(fn: Any, slot: list[int]) -> Any:
                @functools.wraps(fn)
                def timed(*args: Any, **kwargs: Any) -> Any:
                    start = clock()
                    try:
                        return fn(*args, **kwargs)
                    finally:
                        slot[0] += clock() - start
                        slot[1] += 1

                return timed

            wrapped = make_sync(original, slot)
        else:
            continue
        setattr(owner, attr, wrapped)


def _write_timers() -> None:
    import os
    from pathlib import Path

    calls = max(1, _TIMES.get("Enforcer.call_tool", [0, 1])[1])
    lines = [f"{calls} calls; inclusive wall time per call (us), and how often each ran per call"]
    for label, (total, count) in _TIMES.items():
        if count:
            lines.append(f"{label:40s} {total / calls / 1000:9.1f} us  x{count / calls:.2f}")
    Path(os.environ["BENCH_TIMERS_OUT"]).write_text("\n".join(lines) + "\n")  # set by bench.lesions
    for slot in _TIMES.values():
        slot[0] = slot[1] = 0
    print("PROFILED", flush=True)


def _lesion(name: str) -> bool:
    """Take one piece of the call path away; True when the lesion has a step after start-up."""
    if name == "lesion-gc":
        return True
    if name == "lesion-sequencer":
        from server.audit.sequencer import Sequencer

        async def no_batch(self: Any) -> None:
            return None

        Sequencer._batch = no_batch  # type: ignore[assignment,method-assign]
    elif name == "lesion-after-call":
        from server.callpath import guard

        async def after_call(*args: Any) -> None:
            return None

        guard.after_call = after_call  # type: ignore[assignment]
    elif name == "lesion-guards":
        from server.callpath import guard

        async def guard_refusal(*args: Any) -> None:
            return None

        guard.guard_refusal = guard_refusal  # type: ignore[assignment]
    elif name == "lesion-tracing":
        from opentelemetry import trace

        from server import app
        from server.observability.tracing import Tracing

        def configure_tracing(*args: Any, **kwargs: Any) -> Tracing:
            return Tracing(trace.NoOpTracer())

        app.configure_tracing = configure_tracing  # type: ignore[assignment]
    elif name == "lesion-audit":
        from server.audit import chain

        async def append(session: Any, record: Any) -> None:
            return None

        chain.append = append  # type: ignore[assignment]
    elif name == "lesion-refund-enforcer":
        _stub_refund_enforcer()
    return False


def _stub_refund_enforcer() -> None:
    import json

    import mcp_types as types

    from server.callpath.enforcer import Enforcer

    body = {"refund_id": "ref_0", "order_id": "ord_1", "amount": "1.00", "currency": "EUR"}
    answer = types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(body))], structured_content=body
    )

    async def call_tool(self: Any, principal: Any, name: str, arguments: Any, info: Any) -> types.CallToolResult:
        return answer

    Enforcer.call_tool = call_tool  # type: ignore[method-assign]


def _stub_enforcer() -> None:
    import json

    import mcp_types as types

    from bench.catalog_tools import TRIVIAL_ARGUMENTS
    from server.callpath.enforcer import Enforcer

    spent = {"status": "spent", **TRIVIAL_ARGUMENTS}
    answer = types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(spent))], structured_content=spent
    )

    async def call_tool(self: Any, principal: Any, name: str, arguments: Any, info: Any) -> types.CallToolResult:
        return answer

    Enforcer.call_tool = call_tool  # type: ignore[method-assign]


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
        from server.callpath.record import CallInfo

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
