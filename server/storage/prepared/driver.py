"""The DBAPI connection under a session's transaction, found once per transaction: where the prepared statements
run.

:func:`_driver` finds it through the session (beginning the session's transaction if it has not begun) and keeps it
in ``Session.info`` for the transaction's later statements (:func:`_held_driver`); :func:`bind_driver` and
:func:`bind_direct` hand it over when the caller holds the connection already (:mod:`server.storage.sqlite_writer`,
:mod:`server.storage.pg_unit`). The statements run directly on it, under the session's transaction:

- on PostgreSQL, psycopg's ``AsyncConnection``; psycopg prepares a statement on the server once it has run a few
  times (its ``prepare_threshold``), so the hot statements are server-side prepared statements;
- on SQLite, the ``sqlite3`` connection under aiosqlite, called on the event loop's thread. That is safe because
  every Mandate write transaction has already taken SQLite's write lock (``BEGIN IMMEDIATE``, which waits on
  aiosqlite's thread, never on the loop): in WAL mode no statement of a transaction that holds the write lock waits
  for another connection, so none of these calls can sleep in SQLite's busy handler. The connection is opened with
  ``check_same_thread=False`` (:class:`server.storage.database.Database`), and aiosqlite's thread is idle
  whenever this code runs, because the session awaits each of its own statements before the next.

Statements sent straight to the connection bypass the ORM's unit of work, so whatever sends one flushes the session
first when it holds pending changes (:func:`_pending`), and callers must not mix these statements with ORM objects
of the same rows in one transaction.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

_DRIVER = "mandate.prepared.driver"
"""``Session.info`` key: the transaction's DBAPI connection, found once per transaction."""


@dataclass(frozen=True, slots=True)
class _Driver:
    dialect: Dialect
    connection: Any
    sqlite: bool


_DIRECT = object()
"""The ``Session.info`` owner of a driver bound for the session's whole life (:func:`bind_direct`)."""


def _held_driver(sync: Session) -> _Driver | None:
    """The connection an earlier statement of the session's current transaction found, or ``None``."""
    held = sync.info.get(_DRIVER)
    if held is not None and (held[0] is _DIRECT or held[0] is sync.get_transaction()):
        return cast(_Driver, held[1])
    return None


async def _driver(session: AsyncSession) -> _Driver:
    held = _held_driver(session.sync_session)
    if held is not None:
        return held  # this transaction's connection, found by an earlier statement
    connection = await session.connection()  # begins the session's transaction if it has not begun
    raw = await connection.get_raw_connection()
    dialect = connection.dialect
    if dialect.name == "sqlite":
        driver = _Driver(dialect, raw.driver_connection._conn, True)  # type: ignore[union-attr]
    else:
        driver = _Driver(dialect, raw.driver_connection, False)
    session.info[_DRIVER] = (session.sync_session.get_transaction(), driver)
    return driver


def bind_driver(session: AsyncSession, dialect: Dialect, connection: sqlite3.Connection) -> None:
    """Hand the session's statements a ``sqlite3`` connection whose transaction the caller has already begun.

    For :class:`server.storage.sqlite_writer.HeldWriter`: the session is bound to that connection, so once the ORM
    begins a transaction of its own on it, :func:`_driver` finds the same connection again through the session.
    """
    session.info[_DRIVER] = (session.sync_session.get_transaction(), _Driver(dialect, connection, True))


def bind_direct(session: AsyncSession, dialect: Dialect, connection: Any) -> None:
    """Hand the session's statements the psycopg connection of :func:`server.storage.pg_unit.run_unit`.

    The session is bound to that connection and lives for one transaction, so its statements and its queued
    writes belong to it whether or not the ORM has begun a transaction of its own on it (which it does inside the
    one psycopg began)."""
    session.info[_DRIVER] = (_DIRECT, _Driver(dialect, connection, False))


def _owner(sync: Session) -> object:
    """What a queued write belongs to: the session's direct connection, or else its current transaction."""
    held = sync.info.get(_DRIVER)
    if held is not None and held[0] is _DIRECT:
        return _DIRECT
    return sync.get_transaction()


def _has_pending(session: AsyncSession) -> bool:
    """Whether the ORM holds changes not yet flushed (which a statement here must see, so they are flushed first)."""
    return _pending(session.sync_session)


def _pending(sync: Session) -> bool:
    """:func:`_has_pending` of the session's ``sync_session``."""
    try:  # SQLAlchemy's own bookkeeping: a set test, where the public properties build sets (4-5 us a call)
        return bool(sync._new or sync._deleted or sync.identity_map._modified)
    except AttributeError:  # pragma: no cover - another SQLAlchemy: the public, slower view
        return bool(sync.new or sync.deleted or sync.dirty)
