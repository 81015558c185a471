"""The SQLite writer connection: one connection, held for the life of the process, that every write transaction of
this process runs on, with ``BEGIN IMMEDIATE`` and ``COMMIT`` sent straight to ``sqlite3``.

SQLite has one writer at a time, and this process's writers already queue for it one at a time
(:class:`server.storage.database.Database`), so they never need more than one connection between them. Taking a
pooled connection and an ORM transaction for each unit of work cost about 350 us of Python per transaction here
(the pool's checkout, reset and check-in; the session's ``begin``, ``connection`` and ``commit``, each a hop through
SQLAlchemy's greenlet bridge), against about 20 us for ``sqlite3``'s own ``BEGIN IMMEDIATE``, insert and ``COMMIT``
(docs/performance.md). Here the connection is checked out of the pool once, and a unit of work:

- takes the write lock with ``BEGIN IMMEDIATE`` on the event loop's thread when it is free at once, or on
  aiosqlite's thread, where SQLite's busy handler waits for another process or a read session to let go
  (:func:`server.storage.sqlite.begin_inline`: the loop never waits on a lock);
- is handed an ``AsyncSession`` bound to that connection. The call path's prepared statements run on the
  ``sqlite3`` connection under it (:func:`server.storage.prepared.driver.bind_driver`); ORM work (a tool's
  ``ctx.session.add``) begins the session's transaction on the same connection, inside the one already open, so
  it emits no second ``BEGIN`` (:func:`server.storage.sqlite.configure`'s ``begin`` hook);
- commits through :class:`server.storage.sqlite.Checkpoints` (the session's commit when the ORM took part, the
  same ``COMMIT`` straight away when it did not), or rolls back on any error.

A connection whose rollback fails is given back to the pool as invalid and the next unit of work opens a fresh one,
so a broken connection is never reused. SQLite's own documentation, "Write-Ahead Logging" and "BEGIN TRANSACTION",
is the reference for what the lock and the commit do.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from server.storage import sqlite
from server.storage.prepared import bind_driver, flush_deferred

logger = logging.getLogger(__name__)

T = TypeVar("T")


class WriterUnavailable(Exception):
    """This database cannot use a held writer (not in WAL mode): the caller uses a pooled session instead."""


class HeldWriter:
    """One checked-out connection for this process's write transactions; use only under the writer queue."""

    def __init__(self, engine: AsyncEngine, checkpoints: sqlite.Checkpoints) -> None:
        self._engine = engine
        self._checkpoints = checkpoints
        self._connection: AsyncConnection | None = None
        self._dbapi: Any = None
        self._raw: sqlite3.Connection | None = None
        self.unavailable = False
        """Set once the database turned out not to be in WAL mode: every unit of work then takes a pooled session."""

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the held connection (under the writer queue)."""
        connection, raw = await self._open()
        session = AsyncSession(bind=connection, expire_on_commit=False)
        try:
            if not sqlite.begin_inline(self._dbapi):
                await self._begin_waiting()
            bind_driver(session, connection.dialect, raw)
            result = await work(session)
            await flush_deferred(session)
            if session.sync_session.in_transaction():
                await session.commit()  # the ORM took part: its flush, then the COMMIT (Checkpoints.commit)
            else:
                self._checkpoints.commit(self._dbapi)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                if isinstance(exc, Exception) and not connection.invalidated:
                    await self._roll_back(session)
                else:
                    # Interrupted (cancelled) at an await: aiosqlite's thread may still be running the statement
                    # it was given, so nothing here may touch the sqlite3 connection; it is closed on that thread.
                    await self._discard()
                    await _let_go(session)
            raise
        if session.sync_session.identity_map:
            await session.close()  # nothing to undo after the commit: this only lets go of the loaded objects
        return result

    async def close(self) -> None:
        """Give the connection back to the pool (before the engine is disposed)."""
        connection, self._connection, self._dbapi, self._raw = self._connection, None, None, None
        if connection is not None:
            await connection.close()

    async def _open(self) -> tuple[AsyncConnection, sqlite3.Connection]:
        if self._connection is not None and self._raw is not None:
            return self._connection, self._raw
        connection = await self._engine.connect()
        try:
            fairy = await connection.get_raw_connection()
            dbapi = fairy.dbapi_connection
            raw = sqlite.sqlite3_in_wal(dbapi)
        except BaseException:
            await connection.close()
            raise
        if raw is None:
            await connection.close()
            self.unavailable = True
            raise WriterUnavailable("the database is not in WAL mode")
        self._connection, self._dbapi, self._raw = connection, dbapi, raw
        return connection, raw

    async def _begin_waiting(self) -> None:
        """``BEGIN IMMEDIATE`` on aiosqlite's thread, where the busy handler waits for the other connection."""
        cursor = await self._dbapi.driver_connection.execute("BEGIN IMMEDIATE")
        await cursor.close()

    async def _roll_back(self, session: AsyncSession) -> None:
        """After an error raised by a statement (aiosqlite's thread is idle): roll back on the loop's thread."""
        try:
            if session.sync_session.in_transaction():
                await session.rollback()
            raw = self._raw
            if raw is not None and raw.in_transaction:
                raw.execute("ROLLBACK")
        except Exception:
            logger.warning("the SQLite writer connection could not roll back; it is replaced", exc_info=True)
            await self._discard()
        await _let_go(session)

    async def _discard(self) -> None:
        """Invalidate the held connection (its state is unknown) so the next unit of work opens another."""
        connection, self._connection, self._dbapi, self._raw = self._connection, None, None, None
        if connection is None:
            return
        try:
            await connection.invalidate()
            await connection.close()
        except Exception:  # the connection is being dropped; nothing more can be done with it
            logger.debug("closing an invalidated SQLite writer connection failed", exc_info=True)


async def _let_go(session: AsyncSession) -> None:
    """Close a session after a failed unit of work; its connection is the writer's, already rolled back or dropped."""
    try:
        await session.close()
    except Exception:  # the transaction is gone either way; the error that ended it is raised
        logger.debug("closing the session of a failed SQLite unit of work failed", exc_info=True)
