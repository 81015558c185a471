"""The one database that holds the store, the ledger, approvals and the audit trail, and its transactions.

SQLite (the embedded default, one file in WAL mode) or PostgreSQL (for several replicas), both through SQLAlchemy's
asyncio engine. Every unit of work that changes state runs in one transaction (DESIGN.md section 3, step 5): on
SQLite it starts with ``BEGIN IMMEDIATE``, taking the write lock up front so two writers never both read an old
total; on PostgreSQL it runs at READ COMMITTED and relies on row locks and conditional updates, and a transaction
that the server aborts for a serialization failure or deadlock (SQLSTATE 40001 / 40P01) is retried.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from server.storage import sqlite
from server.storage.pg_unit import ConnectionLost, begin_hook, run_unit
from server.storage.prepared import flush_deferred
from server.storage.sqlite_writer import HeldWriter, WriterUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

_RETRYABLE_SQLSTATES = {"40001", "40P01", "26000"}
"""Serialization failure, deadlock, and a prepared statement of server.storage.pg_batch that was deallocated (its
names are forgotten when that happens, so the next attempt prepares them again)."""
_MAX_ATTEMPTS = 8


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached or refused the unit of work; the action did not happen."""


def normalise_url(url: str) -> URL:
    """Pick the async driver for a plain URL: ``sqlite:///x.db`` -> aiosqlite, ``postgresql://`` -> psycopg."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def sqlite_url_for(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'mandate.db').resolve()}"


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionLost):
        return True  # PostgreSQL: the connection broke before the COMMIT was sent; nothing committed
    if getattr(exc, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        return True  # psycopg's own error, from a statement run on the driver (server.storage.prepared)
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if sqlstate in _RETRYABLE_SQLSTATES:
            return True
        # SQLite: another process holds the write lock beyond busy_timeout.
        if isinstance(exc, OperationalError) and "database is locked" in str(exc.orig):
            return True
    # SQLite, from a statement run on the driver (the held writer's BEGIN IMMEDIATE, a prepared statement)
    return isinstance(exc, sqlite3.OperationalError) and "database is locked" in str(exc)


class Database:
    """An async engine plus the transaction discipline Mandate relies on."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        # hide_parameters: a failed statement's message must not carry argument values (emails, free text) into logs.
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.is_sqlite:
            database = self.url.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread: the call path's prepared statements run on the loop's thread, inside a transaction
            # that already holds the write lock (server.storage.prepared.driver)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
            # psycopg prepares nothing of its own: after any ROLLBACK it would DEALLOCATE ALL, taking the unit of
            # work's own prepared statements (server.storage.pg_batch) with its own
            kwargs["connect_args"] = {"prepare_threshold": None}
            # No pre-ping (a round trip per checkout): a dead connection fails the first statement instead, the
            # pool drops it and the connections opened before it, and a write transaction is retried on a fresh
            # one (server.storage.pg_unit.ConnectionLost); a read session's caller sees the error (fail closed).
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if not self.is_sqlite:
            event.listen(self.engine.sync_engine, "begin", begin_hook)
        # SQLite has one writer at a time. Without a queue of our own, concurrent ``BEGIN IMMEDIATE`` meet
        # SQLITE_BUSY and SQLite's busy handler sleeps (1, 2, 5, 10 ... 100 ms) before trying again, so a burst of
        # calls waits on timers, not on each other. One lock per process queues them in arrival order instead; the
        # busy handler still arbitrates between processes that share the file.
        self._write_lock: anyio.Lock | None = None
        self._checkpoints: sqlite.Checkpoints | None = None
        self._writer: HeldWriter | None = None
        if self.is_sqlite:
            self._write_lock = anyio.Lock(fast_acquire=True)
            self._checkpoints = sqlite.configure(self.engine, self._write_lock)
            self._writer = HeldWriter(self.engine, self._checkpoints)

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for logs and messages."""
        return self.url.render_as_string(hide_password=True)

    async def dispose(self) -> None:
        """Close every connection: the engine may open new ones afterwards (:meth:`AsyncEngine.dispose`)."""
        if self._checkpoints is not None:
            await self._checkpoints.finish()
        if self._writer is not None:
            await self._writer.close()
            await sqlite.closes_finished()
        await self.engine.dispose()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for reads; writes go through :meth:`run_in_transaction`."""
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            yield session

    async def run_in_transaction(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction that commits only if it returns; retry on serialization failures.

        ``work`` may run more than once, so it must do nothing outside the session that it cannot repeat. On SQLite
        the transactions of this process run one at a time (in arrival order), so ``work`` must not wait on another
        transaction of the same database.
        """
        delay = 0.005
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                if self._write_lock is None:
                    return await self._attempt(work)
                async with self._write_lock:
                    return await self._attempt(work)
            except Exception as exc:
                if attempt < _MAX_ATTEMPTS and _is_retryable(exc):
                    logger.debug("transaction conflict, retry %d", attempt)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 0.25)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        if self._write_lock is None:
            return await run_unit(self.engine, work)  # PostgreSQL: a pooled psycopg connection, its edges direct
        writer = self._writer
        if writer is not None and not writer.unavailable:
            try:
                return await writer.run(work)  # one held connection, its edges straight to sqlite3
            except WriterUnavailable:
                pass  # not in WAL mode: a pooled session, as below, from now on
        # SQLite: the session is closed in this task. ``async with AsyncSession`` closes it in a task of its own
        # (shielded from cancellation), which hands the event loop to other work while this process's writer queue
        # is still held; after a commit the close has nothing to undo and never waits (server.storage.sqlite).
        session = AsyncSession(self.engine, expire_on_commit=False)
        try:
            async with session.begin():
                result = await work(session)
                await flush_deferred(session)
        except BaseException:
            async with session:  # closed as the context manager closes it, whatever interrupts
                raise
        await session.close()
        return result
