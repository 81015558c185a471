"""SQLite connections as Mandate opens them: WAL, foreign keys, ``BEGIN IMMEDIATE``, and a transaction's edges run
on the event loop's thread.

SQLAlchemy's aiosqlite dialect sends every statement, ``BEGIN``, ``COMMIT`` and ``ROLLBACK`` to aiosqlite's worker
thread and waits for the answer on the event loop. Each such hop costs more than SQLite's own work on a small
transaction, and each is a point where the event loop runs other requests while the transaction still holds
SQLite's write lock, so under concurrency the lock is held for much longer than the transaction's own work
(docs/performance.md). Here, on a connection in WAL mode (SQLite documentation, "Write-Ahead Logging"):

- ``BEGIN IMMEDIATE`` is tried on the loop's thread with the busy timeout set to zero. When the write lock is free
  (always, when the other writers are this process's, which queue in :class:`server.storage.database.Database`),
  it is taken at once. When another connection holds it (another process, a read session), SQLite answers
  ``SQLITE_BUSY`` at once instead of sleeping in its busy handler on the loop, and the ``BEGIN IMMEDIATE`` is sent
  to aiosqlite's thread, where the busy handler waits as before. The loop never waits on a lock.
- ``COMMIT`` and ``ROLLBACK`` run on the loop's thread. In WAL mode neither waits for another connection: the
  transaction already holds the write lock and a commit appends to the WAL. Outside a transaction (a pool's reset
  on return) they do nothing, as ``sqlite3`` itself would, without the hop.
- SQLite's automatic checkpoint, which would run inside a ``COMMIT`` and sync the database file on the loop, is
  turned off; :class:`Checkpoints` runs it on aiosqlite's thread instead.

A connection that is not in WAL mode (a file system without shared memory) keeps every statement on aiosqlite's
thread. The inline calls are safe because aiosqlite's thread is idle whenever the loop's code runs between two
awaited statements of the same connection, and the connection is opened with ``check_same_thread=False``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import weakref
from typing import Any

import anyio
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util.concurrency import await_, in_greenlet

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
"""How long a statement on aiosqlite's thread waits for another connection's write lock."""

_IN_WAL: weakref.WeakSet[Any] = weakref.WeakSet()

WAL_ATTEMPTS = 5


def switch_to_wal(cursor: Any) -> Any:
    """``PRAGMA journal_mode=WAL`` on a DBAPI cursor; its answer row (``("wal",)``).

    Two connections switching one new file at the same moment can both hold a shared lock and both want the
    exclusive one; SQLite then answers one of them "database is locked" at once, without its busy handler (the
    deadlock it avoids; seen in about one start in four with four connections). The failed statement has let its lock
    go, so the next attempt waits in the busy handler like any statement, and finds the file in WAL already.
    """
    for attempt in range(WAL_ATTEMPTS):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return cursor.fetchone()
        except Exception as exc:  # sqlite3's OperationalError, or the same through SQLAlchemy's async adapter
            if "database is locked" not in str(exc) or attempt == WAL_ATTEMPTS - 1:
                raise
    return None  # pragma: no cover - the loop returns or raises


"""The aiosqlite connections whose database is in WAL mode (``journal_mode`` as the connection found it)."""

_CLOSING: set[asyncio.Future[None]] = set()
"""Closes of invalidated SQLite connections still running (the event loop holds tasks only weakly)."""


def configure(engine: AsyncEngine, writers: anyio.Lock) -> Checkpoints:
    """WAL, foreign keys, the busy timeout, ``BEGIN IMMEDIATE`` for every transaction, and the inline edges.

    pysqlite's own transaction handling is turned off (``isolation_level = None``) so that SQLAlchemy's ``begin``
    event can emit ``BEGIN IMMEDIATE`` itself (SQLAlchemy documentation, "Serializable isolation / Savepoints /
    Transactional DDL" for the SQLite dialects).
    """
    dialect = engine.sync_engine.dialect
    checkpoints = Checkpoints(engine, writers)
    dialect.do_terminate = _terminate  # type: ignore[method-assign]
    dialect.do_commit = checkpoints.commit  # type: ignore[method-assign]
    dialect.do_rollback = _rollback  # type: ignore[method-assign]

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # first, so that switching a new file to WAL (which takes an exclusive lock) waits as long as any statement
        # does for a connection that holds the file (another process migrating it), not sqlite3's default 5 s
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        mode = switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        if mode is not None and str(mode[0]).lower() == "wal":
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on aiosqlite's thread (Checkpoints)
            cursor.close()
            _IN_WAL.add(dbapi_connection._connection)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        driver = connection.connection.dbapi_connection
        raw = sqlite3_in_wal(driver)
        if raw is not None and raw.in_transaction:
            return  # the held writer's BEGIN IMMEDIATE is open: the ORM's work joins it (server.storage.sqlite_writer)
        if driver is not None and begin_inline(driver):
            return
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # on aiosqlite's thread, waiting in the busy handler

    return checkpoints


def sqlite3_in_wal(dbapi_connection: Any) -> sqlite3.Connection | None:
    """The ``sqlite3`` connection under SQLAlchemy's adapter, when its database is in WAL mode."""
    connection = getattr(dbapi_connection, "_connection", None)
    if connection is None or connection not in _IN_WAL:
        return None
    raw: sqlite3.Connection | None = getattr(connection, "_conn", None)
    return raw


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == sqlite3.SQLITE_BUSY)
    return "database is locked" in str(exc)  # pragma: no cover - an sqlite3 without error codes


def begin_inline(dbapi_connection: Any) -> bool:
    """Take the write lock on the loop's thread if it is free at once; ``False`` when another connection holds it."""
    raw = sqlite3_in_wal(dbapi_connection)
    if raw is None:
        return False
    raw.execute("PRAGMA busy_timeout=0")
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            return False
        raise
    finally:
        raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return True


class Checkpoints:
    """Inline commits, and the WAL's checkpoints on aiosqlite's thread instead of in the committing statement.

    SQLite's automatic checkpoint runs inside the ``COMMIT`` that crosses its threshold (1,000 pages), and a
    checkpoint writes pages back into the database file and syncs it: tens of milliseconds that would stop the event
    loop. The automatic checkpoint is turned off on Mandate's connections; every :data:`EVERY` commits, a
    ``PASSIVE`` checkpoint (which never waits for a reader or a writer) runs on a pooled connection's own thread,
    one at a time: first beside the writers, for the bulk of the pages and the syncs, then again holding the
    process's writer queue, for what they appended meanwhile. The second is what lets the WAL start over: a
    checkpoint that races with writers never catches up with the end of the WAL, SQLite starts the WAL over from its
    beginning only after a checkpoint has caught up, and the file would grow without end. Calls queue only for the
    second, short one, and the event loop serves meanwhile. A process that
    commits less (a command line's few transactions) leaves its frames for the next checkpoint, or for SQLite's own
    when the last connection closes.
    """

    EVERY = 200
    """Commits between two checkpoints: the WAL stays at a few thousand pages at most between them."""

    def __init__(self, engine: AsyncEngine, writers: anyio.Lock) -> None:
        self._engine = engine
        self._writers = writers
        self._commits = 0
        self._running: asyncio.Task[None] | None = None
        self.done = 0
        """Checkpoints completed (for tests and the bench)."""

    def commit(self, dbapi_connection: Any) -> None:
        raw = sqlite3_in_wal(dbapi_connection)
        if raw is None:
            dbapi_connection.commit()
            return
        if not raw.in_transaction:
            return
        raw.execute("COMMIT")
        self._commits += 1
        if self._commits >= self.EVERY and self._running is None:
            self._start()

    async def finish(self) -> None:
        """Wait for the checkpoint in progress, if any (before the engine is disposed)."""
        running = self._running
        if running is not None:
            await asyncio.wait({running})

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop in this thread (a synchronous use): SQLite's own checkpoint on close
            return
        self._commits = 0
        self._running = loop.create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            async with self._engine.connect() as connection:
                raw = (await connection.get_raw_connection()).driver_connection
                # the bulk of the pages and the syncs beside the writers, then, holding their queue, what they
                # appended meanwhile: the log is then wholly written back and the next writer starts it over
                await (await raw.execute("PRAGMA wal_checkpoint(PASSIVE)")).close()  # type: ignore[union-attr]
                async with self._writers:
                    await (await raw.execute("PRAGMA wal_checkpoint(PASSIVE)")).close()  # type: ignore[union-attr]
            self.done += 1
        except Exception:  # the next one retries; SQLite's frames are safe in the WAL meanwhile
            logger.warning("a WAL checkpoint failed; the next one will retry", exc_info=True)
        finally:
            self._running = None


def _rollback(dbapi_connection: Any) -> None:
    raw = sqlite3_in_wal(dbapi_connection)
    if raw is None:
        dbapi_connection.rollback()
    elif raw.in_transaction:
        raw.execute("ROLLBACK")


def _terminate(dbapi_connection: Any) -> None:
    """Close an invalidated aiosqlite connection (a query cancelled mid-flight) and let the close finish.

    SQLAlchemy's terminate closes it in a shielded task and, when cancelled meanwhile, force-stops aiosqlite's worker
    thread; the close then waits forever for the stopped thread (aiosqlite 0.22), and the event loop's shutdown
    waits forever for the close. Here the shielded close runs to its end on the live thread even when the caller is
    cancelled, and the shutdown's wait for it ends (tests/test_database_transactions.py). Outside the event loop
    (garbage collection) the forced stop is all there is.
    """
    _IN_WAL.discard(getattr(dbapi_connection, "_connection", None))
    if not in_greenlet():
        dbapi_connection.terminate()
        return
    closing = asyncio.ensure_future(_roll_back_and_close(dbapi_connection.driver_connection))
    _CLOSING.add(closing)
    closing.add_done_callback(_CLOSING.discard)
    await_(asyncio.shield(closing))


async def closes_finished() -> None:
    """Wait for the closes of terminated connections still running on this event loop (before a dispose ends)."""
    loop = asyncio.get_running_loop()
    pending = {closing for closing in _CLOSING if closing.get_loop() is loop}
    if pending:
        await asyncio.wait(pending)


async def _roll_back_and_close(connection: Any) -> None:
    """Roll back, then close, on the connection's own thread, after whatever statement it is still running.

    A ``sqlite3`` connection closed while a cursor still holds its interrupted statement stays open underneath
    until that cursor is collected, and keeps its write lock meanwhile; the rollback ends the transaction first.
    """
    try:
        await connection.rollback()
    except Exception:  # the close below is what matters; a failed rollback changes nothing
        logger.debug("rolling back a terminated SQLite connection failed", exc_info=True)
    await connection.close()
