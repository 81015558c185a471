"""A few statements sent to PostgreSQL in one pipeline and read back after one wait, through libpq itself.

psycopg's own pipeline costs some 80 us of Python for ``BEGIN``, a ``SELECT`` and ``COMMIT`` on this machine, most
of it its bookkeeping around each command (a cursor, a transformer, a trip through its wait loop for each
``execute``, and another for the pipeline's end), where libpq driven directly costs about 15 us (docs/performance.md).
A unit of work of :mod:`server.storage.pg_unit` sends each of its round trips here: the statements are queued
(``PQsendPrepare`` the first time a statement is met on a connection, ``PQsendQueryPrepared``; past 256 kept, a
new one goes unnamed), a ``Sync`` ends
the pipeline, and the results are read once the socket is readable. Values are dumped and rows loaded by psycopg's
own adapters (``psycopg.adapt.Transformer``), so they are exactly what psycopg would send and return. The first
failing statement's error is raised (psycopg's exception class for its SQLSTATE) once every result up to the
``Sync`` has been read; the statements after it are not run (libpq's pipeline mode: "Pipeline Mode", PostgreSQL
documentation, section 34.5). An exchange interrupted after it sent anything (cancelled, or any error before its
results are read) closes the connection: it is in pipeline mode with results unread, and the unit of work drops it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import secrets
import weakref
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors, pq
from psycopg.adapt import PyFormat, Transformer

Statement = tuple[bytes, Sequence[Any] | None]
"""The SQL (``$1`` placeholders) and its values; ``None``: a statement without parameters (``BEGIN``)."""
Outcome = tuple[list[tuple[Any, ...]], int]
"""A statement's rows and the number of rows it changed (``-1`` when the server does not say)."""

_PLACEHOLDER = re.compile(r"%(?:%|\(([^)]*)\)s)")
_POSITIONAL: dict[str, tuple[bytes, tuple[str, ...]]] = {}
_NAMES = itertools.count()
_PROCESS = secrets.token_hex(4)
_MAX_PREPARED = 256
"""Statements kept prepared per connection; past that, a new one is sent unnamed (the server plans it each time)."""
_STATEMENT_GONE = "26000"
"""invalid_sql_statement_name: a statement this module prepared is gone (``DEALLOCATE ALL`` on the session)."""
_Preparing = tuple[tuple[bytes, tuple[int, ...]], bytes]
"""A statement being prepared: its key (SQL, parameter types) and its name."""
_PREPARED: weakref.WeakKeyDictionary[Any, dict[tuple[bytes, tuple[int, ...]], bytes]] = weakref.WeakKeyDictionary()
"""Per libpq connection: the statements prepared on it, by SQL and parameter types, and their names."""


def positional(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """A ``%(name)s`` statement (SQLAlchemy's for psycopg) with ``$1`` placeholders, and the names in their order."""
    found = _POSITIONAL.get(sql)
    if found is None:
        order: dict[str, int] = {}

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return "%"
            return f"${order.setdefault(name, len(order) + 1)}"

        found = (_PLACEHOLDER.sub(number, sql).encode(), tuple(order))
        if len(_POSITIONAL) < 4096:
            _POSITIONAL[sql] = found
    return found


async def exchange(connection: psycopg.AsyncConnection[Any], statements: Sequence[Statement]) -> list[Outcome]:
    """Run ``statements`` in order in one round trip; each one's rows and row count, or the first one's error."""
    pg = connection.pgconn
    names = _PREPARED.get(pg)
    if names is None:
        names = _PREPARED[pg] = {}
    transformer = Transformer(connection)  # dumps the values and loads the rows, as a psycopg cursor's does
    # every value is dumped before anything is sent: a value that cannot be (a NUL in a string) fails here, with
    # the connection untouched
    dumped = [
        (sql, None, (), [])
        if params is None
        else (
            sql,
            transformer.dump_sequence(params, [PyFormat.AUTO] * len(params)),
            tuple(transformer.types or ()),
            list(transformer.formats or ()),
        )
        for sql, params in statements
    ]
    preparing: list[_Preparing | None] = []  # per command sent: the statement it prepares, or None (a query)
    sending: dict[tuple[bytes, tuple[int, ...]], bytes] = {}  # the statements this pipeline prepares
    async with connection.lock:
        pg.enter_pipeline_mode()
        try:
            for sql, values, types, formats in dumped:
                if values is None:
                    pg.send_query_params(sql, None)
                    preparing.append(None)
                    continue
                key = (sql, types)
                name = names.get(key) or sending.get(key)  # prepared before, or earlier in this pipeline
                if name is None and len(names) >= _MAX_PREPARED:  # a rare shape: planned once, not kept
                    pg.send_query_params(sql, values, param_types=types, param_formats=formats)
                    preparing.append(None)
                    continue
                if name is None:
                    name = sending[key] = _new_name()
                    pg.send_prepare(name, sql, param_types=types)
                    preparing.append((key, name))
                pg.send_query_prepared(name, values, param_formats=formats)
                preparing.append(None)
            pg.pipeline_sync()
            groups = await _results(connection, pg)
            pg.exit_pipeline_mode()
        except BaseException:  # commands sent, results unread: this connection's state is unknown; never reused
            pg.finish()
            raise
    return _outcomes(connection, transformer, groups, preparing, names)


def _new_name() -> bytes:
    """A statement name no other process uses: a pooler in transaction mode can hand one server session to
    several processes, where a name another process prepared must not be taken for one of this process's."""
    return f"_m{os.getpid():x}_{_PROCESS}_{next(_NAMES)}".encode()


async def _results(connection: psycopg.AsyncConnection[Any], pg: Any) -> list[list[Any]]:
    """Every command's results, up to and including the pipeline's ``Sync``."""
    loop = asyncio.get_running_loop()
    socket = pg.socket
    while pg.flush():  # the output buffer is full: wait until the socket takes more
        await _ready(loop, socket, write=True)
    groups: list[list[Any]] = []
    current: list[Any] = []
    while True:
        while pg.is_busy():
            await _ready(loop, socket, write=False)
            pg.consume_input()
        result = pg.get_result()
        if result is None:
            groups.append(current)
            current = []
        elif result.status == pq.ExecStatus.PIPELINE_SYNC:
            return groups
        else:
            current.append(result)


async def _ready(loop: asyncio.AbstractEventLoop, socket: int, *, write: bool) -> None:
    future = loop.create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    if write:
        loop.add_writer(socket, wake)
    else:
        loop.add_reader(socket, wake)
    try:
        await future
    finally:
        if write:
            loop.remove_writer(socket)
        else:
            loop.remove_reader(socket)


def _outcomes(
    connection: psycopg.AsyncConnection[Any],
    transformer: Any,
    groups: list[list[Any]],
    preparing: list[_Preparing | None],
    names: dict[tuple[bytes, tuple[int, ...]], bytes],
) -> list[Outcome]:
    if len(groups) != len(preparing):
        raise psycopg.InternalError(f"a pipeline of {len(preparing)} commands returned {len(groups)} results")
    outcomes: list[Outcome] = []
    failure: Exception | None = None
    encoding = getattr(connection.pgconn, "_encoding", "utf-8")
    for results, prepared in zip(groups, preparing, strict=True):
        if not results:
            continue
        result = results[-1]
        status = result.status
        if status == pq.ExecStatus.FATAL_ERROR:
            if failure is None:
                failure = errors.error_from_result(result, encoding=encoding)
                if failure.sqlstate == _STATEMENT_GONE:  # deallocated under us: prepared again on the next try
                    names.clear()
            continue
        if status == pq.ExecStatus.PIPELINE_ABORTED:
            continue
        if prepared is not None:
            names[prepared[0]] = prepared[1]  # prepared on this connection: used from now on
            continue
        rows: list[tuple[Any, ...]] = []
        if status == pq.ExecStatus.TUPLES_OK and result.ntuples:
            transformer.set_pgresult(result)
            rows = transformer.load_rows(0, result.ntuples, tuple)
        count = result.command_tuples
        outcomes.append((rows, -1 if count is None else count))
    if failure is not None:
        raise failure
    return outcomes
