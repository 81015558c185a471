"""Writes whose results the call does not wait for, queued with :func:`defer` and :func:`defer_many` and sent with
the transaction's next statement or its commit; and savepoints that respect them.

On PostgreSQL the queued writes of a transaction go to the server together, in one round trip, before its next
statement run here (:mod:`server.storage.prepared.running`) or its commit, most of them in one statement
(:mod:`server.storage.merged_writes`); a write that fails or changes another number of rows than it expects fails
the transaction there. Whatever commits the transaction sends them first (a ``before_commit`` listener on every
``Session``), so a queued write is never lost; :func:`commit_deferred` sends them with the ``COMMIT`` itself. On
SQLite, where a statement costs no round trip, a write runs at once. The queue belongs to the session's current
transaction, or to its direct connection (:func:`server.storage.prepared.driver.bind_direct`).

:func:`begin_savepoint` sends the writes queued before it and the ``SAVEPOINT`` at once, so its rollback undoes the
statements run since, and drops the writes queued since, never sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from psycopg.errors import InFailedSqlTransaction
from psycopg.pq import TransactionStatus
from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only
from sqlmodel.ext.asyncio.session import AsyncSession

from server.storage.merged_writes import COMMIT, Mismatch, Write, check, send
from server.storage.prepared.driver import _DRIVER, _Driver, _driver, _held_driver, _owner, _pending
from server.storage.prepared.forms import Prepared, _values

_IDLE = TransactionStatus.IDLE

_DEFERRED = "mandate.prepared.deferred"
"""``Session.info`` key: the transaction's queued writes (:func:`defer`)."""


def _queue(session: AsyncSession) -> list[Write]:
    transaction = _owner(session.sync_session)
    held = session.info.get(_DEFERRED)
    if held is None or held[0] is not transaction:
        held = (transaction, [])
        session.info[_DEFERRED] = held
    queue: list[Write] = held[1]
    return queue


def _queued(session: AsyncSession, driver: _Driver) -> bool:
    if driver.sqlite:
        return False
    held = session.info.get(_DEFERRED)
    return held is not None and bool(held[1]) and held[0] is _owner(session.sync_session)


async def defer(
    session: AsyncSession,
    prepared: Prepared,
    params: Mapping[str, Any],
    *,
    expect: int | None = None,
    mismatch: Mismatch | None = None,
    disjoint: str | None = None,
) -> None:
    """Queue a write that must change ``expect`` rows (any number when ``None``); ``mismatch`` makes the error.

    On PostgreSQL the queued writes of a transaction go to the server together, in one round trip, before its next
    prepared statement or its commit (:meth:`server.storage.database.Database.run_in_transaction`), most of them in
    one statement (:func:`_send_queued`); a write that fails or changes another number of rows fails the
    transaction there. On SQLite, where a statement costs no round trip, it runs at once. The writes must not touch
    rows that the ORM reads or writes later in the same transaction: an ORM statement can reach the database before
    them. ``disjoint``: a tag promising that the queued writes with this tag change distinct rows of one table.
    """
    sync = session.sync_session
    if _pending(sync):
        await session.flush()
    driver = _held_driver(sync) or await _driver(session)
    form = prepared._form_for(driver.dialect, params)
    values = _values(form, params)
    if driver.sqlite:
        rowcount = driver.connection.execute(form.sql, values).rowcount
        if expect is not None and rowcount != expect:
            check(Write(form.sql, values, False, expect, mismatch, None), rowcount)
        return
    _queue(session).append(Write(form.sql, values, False, expect, mismatch, prepared.merge, disjoint))


async def defer_many(
    session: AsyncSession, prepared: Prepared, rows: Sequence[Mapping[str, Any]], *, distinct: bool = False
) -> None:
    """Queue ``prepared`` once per mapping in ``rows`` (as :func:`server.storage.prepared.running.run_many`, but
    sent with the queued writes).

    ``distinct``: no two rows meet the same key, so an ``INSERT ... ON CONFLICT DO UPDATE`` may take them all in
    one statement (which would refuse to update one row twice)."""
    if not rows:
        return
    sync = session.sync_session
    if _pending(sync):
        await session.flush()
    driver = _held_driver(sync) or await _driver(session)
    form = prepared._form_for(driver.dialect, rows[0])
    values = [_values(form, row) for row in rows]
    if driver.sqlite:
        driver.connection.executemany(form.sql, values)
        return
    _queue(session).append(Write(form.sql, values, True, None, None, prepared.merge, distinct=distinct))


async def flush_deferred(session: AsyncSession) -> None:
    """Send the transaction's queued writes, in one round trip, and check what each changed."""
    await _send_queued(session.sync_session)


async def commit_deferred(session: AsyncSession) -> None:
    """Send the queued writes of a session bound by :func:`server.storage.prepared.driver.bind_direct` with its
    transaction's ``COMMIT``, in one round trip.

    Each write's row count is checked by the server (a wrong one aborts the transaction, so the ``COMMIT`` does
    not commit) and raised as the error :func:`defer` was given. For the ORM's part, use the session's commit."""
    driver = session.info[_DRIVER][1]
    connection = driver.connection
    writes = _take_queued(session.sync_session)
    if writes:
        await send(connection, writes, commit=True)
    elif connection.pgconn.transaction_status != _IDLE:
        done = await connection.execute(COMMIT)
        if done.statusmessage != "COMMIT":  # PostgreSQL answers COMMIT in an aborted transaction with ROLLBACK
            raise InFailedSqlTransaction("the transaction had failed; its COMMIT rolled it back")


class Savepoint:
    """A ``SAVEPOINT`` in a session's transaction that the prepared statements and queued writes respect
    (:func:`begin_savepoint`)."""

    def __init__(self, session: AsyncSession, nested: Any) -> None:
        self._session = session
        self._nested = nested

    @property
    def is_active(self) -> bool:
        return bool(self._nested.is_active)

    async def commit(self) -> None:
        """Keep what was done since the savepoint (its queued writes are sent first, inside it)."""
        await flush_deferred(self._session)
        await self._nested.commit()

    async def rollback(self) -> None:
        """Undo what was done since the savepoint: the writes still queued are dropped, never sent, and the server
        rolls back to the savepoint whatever did reach it."""
        _take_queued(self._session.sync_session)
        await self._nested.rollback()


async def begin_savepoint(session: AsyncSession) -> Savepoint:
    """Begin a savepoint whose rollback also undoes the prepared statements and queued writes.

    The ORM's own ``begin_nested`` is not enough here: SQLAlchemy sends ``SAVEPOINT`` only with the next statement
    it runs itself, which statements sent straight to the driver are not, and a write queued by :func:`defer`
    reaches the server only later, after the savepoint's rollback. So the writes queued before it are sent first,
    and ``SAVEPOINT`` at once; its rollback drops the writes queued since."""
    await flush_deferred(session)
    nested = await session.begin_nested()
    await session.connection()  # SQLAlchemy sends the SAVEPOINT as the nested transaction takes its connection
    return Savepoint(session, nested)


def _take_queued(sync: Session) -> list[Write]:
    held = sync.info.get(_DEFERRED)
    if held is None or not held[1] or held[0] is not _owner(sync):
        return []
    sync.info.pop(_DEFERRED, None)
    return cast(list[Write], held[1])


async def _send_queued(sync: Session) -> None:
    writes = _take_queued(sync)
    if writes:
        driver = sync.info[_DRIVER][1]  # found by the statement that queued the first write, in this transaction
        await send(driver.connection, writes)


@event.listens_for(Session, "before_commit")
def _queued_writes_before_any_commit(sync: Session) -> None:
    """Whatever commits a transaction (not only ``Database.run_in_transaction``) sends its queued writes first, so
    a queued write is never lost; an ``AsyncSession`` commits inside a greenlet, where ``await_only`` may wait."""
    held = sync.info.get(_DEFERRED)
    if held is not None and held[1] and held[0] is _owner(sync):
        await_only(_send_queued(sync))
