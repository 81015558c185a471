"""Prepared statements run in the session's transaction: :func:`run` one, :func:`run_all` several (in one round
trip on PostgreSQL), :func:`run_many` one once per set of values.

Each goes straight to the transaction's DBAPI connection (:mod:`server.storage.prepared.driver`, which says why
that is safe on SQLite), so it costs none of SQLAlchemy's per-statement work and, on SQLite, no round trip to
aiosqlite's worker thread (docs/performance.md). Before it, the session's pending ORM changes are flushed, and on
PostgreSQL the writes queued ahead of it are sent (:mod:`server.storage.prepared.deferred`). On a unit of work's own
connection (:mod:`server.storage.pg_unit`, in autocommit mode) the statements go through
:func:`server.storage.pg_batch.exchange`, with the transaction's ``BEGIN`` when it has not been sent yet. What a
statement returned comes back through its result processors, as a :class:`Result`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from server.storage.merged_writes import BEGIN, needs_begin
from server.storage.pg_batch import Statement, exchange, positional
from server.storage.prepared.deferred import _queued, flush_deferred
from server.storage.prepared.driver import _driver, _has_pending, _held_driver, _pending
from server.storage.prepared.forms import Prepared, Row, _Form, _insert_keys, _processed, _values


@dataclass(frozen=True, slots=True)
class Result:
    """What a statement returned: its rows (after the result processors) and how many rows it changed."""

    rows: list[Row]
    rowcount: int

    def scalar(self) -> Any:
        """The first column of the first row, or ``None`` when there is no row."""
        return self.rows[0][0] if self.rows else None

    def first(self) -> Row | None:
        return self.rows[0] if self.rows else None


async def run(session: AsyncSession, prepared: Prepared, params: Mapping[str, Any] | None = None) -> Result:
    """Execute ``prepared`` with ``params`` in the session's transaction (after the writes
    :func:`server.storage.prepared.deferred.defer` queued)."""
    sync = session.sync_session
    if _pending(sync):
        await session.flush()
    driver = _held_driver(sync) or await _driver(session)
    given = params or {}
    if driver.sqlite:  # nothing is queued on SQLite (defer runs at once)
        form = prepared._form_for(driver.dialect, given)
        cursor: sqlite3.Cursor = driver.connection.execute(form.sql, _values(form, given))
        rows = cursor.fetchall() if cursor.description else []
        return Result(_processed(form, rows), cursor.rowcount)
    if _queued(session, driver):
        await flush_deferred(session)
    form = prepared.form(driver.dialect, _insert_keys(prepared, given))
    values = _values(form, given)
    connection = driver.connection
    if connection.autocommit:  # a unit of work's own connection: its BEGIN, if not sent, goes with the statement
        begin: list[Statement] = [(BEGIN, None)] if needs_begin(connection) else []
        rows, rowcount = (await exchange(connection, [*begin, _positional(form, values)]))[-1]
        return Result(_processed(form, rows), rowcount)
    async_cursor = await connection.execute(form.sql, values)
    fetched = await async_cursor.fetchall() if async_cursor.description else []
    return Result(_processed(form, fetched), async_cursor.rowcount)


async def run_all(
    session: AsyncSession, statements: Sequence[tuple[Prepared, Mapping[str, Any] | None]]
) -> list[Result]:
    """Execute ``statements`` in order, in the session's transaction, and return each one's result.

    On PostgreSQL they go to the server together, in one round trip (psycopg's pipeline mode), after the writes
    :func:`server.storage.prepared.deferred.defer` queued; the server still runs them one after the other, and at
    READ COMMITTED each takes its own snapshot when it starts, so a statement sees everything committed before the
    one ahead of it finished (a ``SELECT`` after a ``SELECT ... FOR UPDATE`` sees what was committed while the lock
    was awaited). If one fails, the ones after it do not run and the error is raised. On SQLite they run one by one.
    """
    if not statements:
        return []
    if _has_pending(session):
        await session.flush()
    driver = await _driver(session)
    if _queued(session, driver):
        await flush_deferred(session)
    if driver.sqlite:
        return [await run(session, prepared, params) for prepared, params in statements]
    forms: list[tuple[_Form, Any]] = []
    for prepared, params in statements:
        given = params or {}
        form = prepared.form(driver.dialect, _insert_keys(prepared, given))
        forms.append((form, _values(form, given)))
    connection = driver.connection
    if connection.autocommit:  # a unit of work's own connection (server.storage.pg_unit)
        begin: list[Statement] = [(BEGIN, None)] if needs_begin(connection) else []
        outcomes = await exchange(connection, [*begin, *(_positional(form, values) for form, values in forms)])
        return [
            Result(_processed(form, rows), rowcount)
            for (form, _), (rows, rowcount) in zip(forms, outcomes[len(begin) :], strict=True)
        ]
    cursors = []
    async with connection.pipeline():
        for form, values in forms:
            cursor = connection.cursor()
            await cursor.execute(form.sql, values)
            cursors.append(cursor)
    results = []
    for (form, _), cursor in zip(forms, cursors, strict=True):
        fetched = await cursor.fetchall() if cursor.description else []
        results.append(Result(_processed(form, fetched), cursor.rowcount))
        await cursor.close()
    return results


async def run_many(session: AsyncSession, prepared: Prepared, rows: Sequence[Mapping[str, Any]]) -> None:
    """Execute ``prepared`` once per mapping in ``rows`` (every mapping with the same keys), in one call."""
    if not rows:
        return
    sync = session.sync_session
    if _pending(sync):
        await session.flush()
    driver = _held_driver(sync) or await _driver(session)
    if _queued(session, driver):
        await flush_deferred(session)
    form = prepared._form_for(driver.dialect, rows[0])
    values = [_values(form, row) for row in rows]
    if driver.sqlite:
        driver.connection.executemany(form.sql, values)
        return
    if needs_begin(driver.connection):
        await driver.connection.execute(BEGIN)
    async with driver.connection.cursor() as cursor:
        await cursor.executemany(form.sql, values)


def _positional(form: _Form, values: Mapping[str, Any]) -> Statement:
    """The statement for :func:`server.storage.pg_batch.exchange`: ``$1`` placeholders and the values in order."""
    sql, names = positional(form.sql)
    return sql, [values[name] for name in names]
