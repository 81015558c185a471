"""A PostgreSQL unit of work on a pooled psycopg connection, its BEGIN and COMMIT its own, not the ORM's.

Through SQLAlchemy's ``AsyncSession`` a transaction's edges cost more than its statements: the session's begin
(the pool's checkout and pre-ping, one round trip), psycopg's ``BEGIN`` (another), the session's ``commit`` (a
third), each crossing SQLAlchemy's greenlet bridge (docs/performance.md). Here a unit of work:

- takes a connection from the engine's pool (its checkout is the one hop through the greenlet bridge left), with no
  ping: a dead connection fails the unit's first statement instead, and since nothing can have committed before
  ``COMMIT`` was sent, the unit is retried on a fresh connection (:class:`ConnectionLost`; the pool's older
  connections are recycled at once, as SQLAlchemy does on a disconnect it sees itself);
- is handed an ``AsyncSession`` bound to that connection. The call path's prepared statements run on the psycopg
  connection under it (:func:`server.storage.prepared.driver.bind_direct`), each round trip one libpq pipeline
  (:mod:`server.storage.pg_batch`), the first one with the unit's ``BEGIN``. ORM work (a tool's
  ``ctx.session.add``) begins the session's transaction on the same connection, inside the one already open, or
  sends the ``BEGIN`` itself when it comes first (:func:`begin_hook`);
- commits with its queued writes: when the ORM took no part, the writes and ``COMMIT`` go in one pipeline, the
  writes' row counts checked by the server so that a wrong count aborts the transaction and the ``COMMIT`` is a
  rollback (:func:`server.storage.prepared.deferred.commit_deferred`); when it did, the writes, then the session's
  commit.

Any error rolls back; a connection that cannot roll back, or a unit interrupted at an await (cancelled), is
invalidated, so a connection in an unknown state is never reused. A unit reports success only once its
connection is idle after its own COMMIT: a transaction a caught error aborted is refused, not "committed" (the
server would answer that COMMIT with a rollback), and a connection lost once COMMIT was sent raises
:class:`CommitInDoubt`, neither retried nor called a failure. PostgreSQL's documentation, "Pipeline Mode"
(libpq) and "Transaction Isolation", and psycopg's "Pipeline mode support" are the references.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import psycopg
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import await_only, greenlet_spawn
from sqlmodel.ext.asyncio.session import AsyncSession

from server.storage.merged_writes import BEGIN, needs_begin
from server.storage.prepared import bind_direct, commit_deferred, flush_deferred

logger = logging.getLogger(__name__)

_IDLE = psycopg.pq.TransactionStatus.IDLE
_INERROR = psycopg.pq.TransactionStatus.INERROR

T = TypeVar("T")


class ConnectionLost(RuntimeError):
    """The connection broke before the unit's ``COMMIT`` was sent: nothing committed, and the unit may run again."""


class CommitInDoubt(RuntimeError):
    """The connection broke once the unit's ``COMMIT`` had been sent: it may have committed or not, so the unit is
    neither run again nor reported as having changed nothing (:mod:`server.callpath.outage`)."""


def _broken(exc: BaseException, connection: psycopg.AsyncConnection[Any]) -> bool:
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and (
        connection.closed or connection.broken
    )


async def run_unit(engine: AsyncEngine, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction on a pooled connection; commit only if it returns."""
    fairy = await engine.raw_connection()
    connection: psycopg.AsyncConnection[Any] = fairy.driver_connection  # type: ignore[assignment]
    session = AsyncSession(
        bind=AsyncConnection(engine, Connection(engine.sync_engine, connection=fairy)), expire_on_commit=False
    )
    committing = False
    try:
        # BEGIN and COMMIT are this unit's own, sent in the pipelines of its statements (psycopg, left to itself,
        # sends its BEGIN in a round trip of its own); the ORM's begin sends it too when it comes first (begin_hook)
        await connection.set_autocommit(True)
        bind_direct(session, engine.dialect, connection)
        result = await work(session)
        if connection.pgconn.transaction_status == _INERROR:  # work caught a statement's error and returned
            raise psycopg.errors.InFailedSqlTransaction(
                "a statement of this transaction failed, so it cannot commit; it was rolled back"
            )
        if session.sync_session.in_transaction():
            await flush_deferred(session)
            committing = True
            await session.commit()  # the ORM took part: its flush, then psycopg's COMMIT
        committing = True
        # the queued writes and COMMIT; or COMMIT alone where the session's commit sent none (an ORM transaction
        # begun without a statement, such as an empty savepoint or an unchanged object added, holds no connection)
        await commit_deferred(session)
        if connection.pgconn.transaction_status != _IDLE:  # pragma: no cover - commit_deferred commits or raises
            raise psycopg.InternalError("the transaction is still open after its commit; it is rolled back")
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            lost = isinstance(exc, Exception) and _broken(exc, connection)
            if isinstance(exc, Exception) and not lost:
                await _roll_back(session, connection, fairy)
            else:  # broken, or interrupted at an await: its state is unknown; it is not given back
                await _discard(engine, fairy, exc, everyone=lost)
            await _release(fairy)
        if lost and not committing:
            raise ConnectionLost("the database connection was lost before the commit") from exc
        if lost:
            raise CommitInDoubt("the database connection was lost while committing; the outcome is unknown") from exc
        raise
    await _release(fairy)
    return result


async def _roll_back(session: AsyncSession, connection: psycopg.AsyncConnection[Any], fairy: Any) -> None:
    try:
        if session.sync_session.in_transaction():
            await session.rollback()
        if connection.pgconn.transaction_status != _IDLE:
            await connection.rollback()
    except Exception as exc:  # noqa: BLE001 - logged by class and SQLSTATE only (its text can quote values)
        logger.warning(
            "a PostgreSQL connection could not roll back (%s, SQLSTATE %s); it is replaced",
            type(exc).__name__,
            getattr(exc, "sqlstate", None),
        )
        await greenlet_spawn(fairy.invalidate)


async def _discard(engine: AsyncEngine, fairy: Any, exc: BaseException, *, everyone: bool) -> None:
    """Invalidate the connection (and, for a lost one, every connection the pool opened before it)."""
    try:
        if everyone:
            # what SQLAlchemy does for a disconnect it detects (Connection._handle_dbapi_exception)
            await greenlet_spawn(engine.sync_engine.pool._invalidate, fairy, exc)
        elif fairy.is_valid:
            await greenlet_spawn(fairy.invalidate, exc)
    except Exception as failed:  # noqa: BLE001 - the connection is being dropped; nothing more can be done
        logger.debug("invalidating a PostgreSQL connection failed (%s)", type(failed).__name__)


def begin_hook(connection: Connection) -> None:
    """SQLAlchemy's ``begin`` event: a unit's ORM work that comes before any of its own statements begins the
    transaction (in autocommit mode psycopg would not), so that nothing the unit does runs outside it."""
    driver = connection.connection.driver_connection
    if isinstance(driver, psycopg.AsyncConnection) and needs_begin(driver):
        await_only(driver.execute(BEGIN))


async def _release(fairy: Any) -> None:
    """Give the connection back to the pool (its reset's rollback costs nothing on an idle connection)."""
    try:
        connection = fairy.driver_connection
        if connection is not None and not connection.closed and connection.autocommit:
            if connection.pgconn.transaction_status == _IDLE:
                await connection.set_autocommit(False)
            else:  # pragma: no cover - every path above commits, rolls back, or raises first
                logger.error("a PostgreSQL connection was left inside a transaction; it is closed, not reused")
                await greenlet_spawn(fairy.invalidate)
        await greenlet_spawn(fairy.close)
    except Exception as exc:  # noqa: BLE001 - the connection is closed either way
        logger.debug("returning a PostgreSQL connection to the pool failed (%s)", type(exc).__name__)
