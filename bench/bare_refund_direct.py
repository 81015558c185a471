"""The stronger SQLite baseline for a tool that writes: a bare ``MCPServer`` whose ``refund_create`` makes the same
refund as ``bench.bare_refund`` the way a performance-minded developer would hand-write it for SQLite.

Same tool (name, description, pydantic-annotated parameters, structured output: ``bench.bare_refund``), same tables
(``tools.store.models``), same checks in the same order (read the order, its currency, what is left to refund; add to
its refunded total; insert the refund row), one ``BEGIN IMMEDIATE`` transaction under the same in-process writer
queue. What differs is only how the statements reach SQLite, and it is the write path Mandate itself uses on SQLite
(``server/storage/sqlite_writer.py``, ``server/storage/prepared/``): one stdlib ``sqlite3`` connection held for the
life of the process, opened with the pragmas of ``server/storage/sqlite.py`` (WAL, ``synchronous=NORMAL``, foreign
keys, the busy timeout, no automatic checkpoint), its statements hand-written SQL run on the event loop's thread (no
ORM, no SQLAlchemy Core, no aiosqlite, no thread hop), and a ``PASSIVE`` checkpoint every
:attr:`server.storage.sqlite.Checkpoints.EVERY` commits on a worker thread, the second half of it under the writer
queue, as Mandate's ``Checkpoints`` does, so that neither side syncs the database file on the loop.

A transaction here never awaits, so the queue is never contended except by the checkpoint's second half; the loop
would block in the busy handler only if another process held the write lock, which nothing in the bench does.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from sqlalchemy.engine import make_url

from bench.bare_refund import (
    Amount,
    Currency,
    OrderId,
    Reason,
    RefundPublic,
    _money,
    create_refund_tables,
    refund_mcp_server,
)
from server.storage.database import Database
from server.storage.sqlite import BUSY_TIMEOUT_MS, Checkpoints

logger = logging.getLogger(__name__)

READ = "SELECT customer_id, currency, total_minor, refunded_minor FROM orders WHERE id = ?"
ADD = "UPDATE orders SET refunded_minor = refunded_minor + ? WHERE id = ?"
INSERT = (
    "INSERT INTO refunds (id, order_id, customer_id, amount_minor, currency, reason, created_at, created_by, audit_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
"""The statements SQLAlchemy Core compiles for ``bench.bare_refund`` (sqlite3 caches each prepared statement)."""
CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"
STORED_INSTANT = "%Y-%m-%d %H:%M:%S.%f"
"""How SQLAlchemy's SQLite ``DATETIME`` stores an instant (``UTCDateTime``: UTC, without the offset)."""


def open_connection(path: str) -> sqlite3.Connection:
    """A ``sqlite3`` connection with the pragmas of ``server.storage.sqlite.configure`` (WAL required)."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()
    if mode is None or str(mode[0]).lower() != "wal":
        connection.close()
        raise RuntimeError(f"{path}: not in WAL mode ({mode!r}); the direct baseline needs it")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on a worker thread (DirectWriter)
    return connection


class DirectWriter:
    """The held connection, its refund transaction, and its checkpoints; :meth:`refund` only under ``queue``."""

    def __init__(self, path: str, queue: anyio.Lock) -> None:
        self._connection = open_connection(path)
        self._checkpointer = open_connection(path)  # used only on a worker thread, one checkpoint at a time
        self._queue = queue
        self._commits = 0
        self._running: asyncio.Task[None] | None = None
        self.checkpoints = 0
        """Checkpoints completed (for the tests)."""

    def refund(self, order_id: str, minor: int, currency: str, reason: str) -> RefundPublic:
        """The refund in one transaction, on the calling thread (the event loop's)."""
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            row = connection.execute(READ, (order_id,)).fetchone()
            if row is None:
                raise ToolError(f"Order {order_id} not found.")
            customer_id, order_currency, total, refunded = row
            if currency != order_currency:
                raise ToolError(f"Order {order_id} was paid in {order_currency}.")
            if minor > total - refunded:
                raise ToolError(f"Only {_money(total - refunded)} is left to refund.")
            connection.execute(ADD, (minor, order_id))
            refund_id = f"ref_{uuid.uuid4().hex[:20]}"
            created_at = datetime.now(UTC).strftime(STORED_INSTANT)
            connection.execute(
                INSERT, (refund_id, order_id, customer_id, minor, currency, reason, created_at, "bare", "none")
            )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        self._committed()
        return RefundPublic(
            refund_id=refund_id,
            order_id=order_id,
            customer_id=customer_id,
            amount=_money(minor),
            currency=currency,
            order_refunded_total=_money(refunded + minor),
            order_refundable_left=_money(total - refunded - minor),
        )

    def _committed(self) -> None:
        self._commits += 1
        if self._commits >= Checkpoints.EVERY and self._running is None:
            self._commits = 0
            self._running = asyncio.get_running_loop().create_task(self._checkpoint())

    def _checkpoint_now(self) -> None:
        self._checkpointer.execute(CHECKPOINT).fetchall()

    async def _checkpoint(self) -> None:
        try:
            # the bulk of the pages and the syncs beside the writers, then, holding their queue, what they appended
            # meanwhile, so the WAL is wholly written back and the next writer starts it over (as Checkpoints)
            await anyio.to_thread.run_sync(self._checkpoint_now)
            async with self._queue:
                await anyio.to_thread.run_sync(self._checkpoint_now)
            self.checkpoints += 1
        except Exception:  # the next one retries; the frames are safe in the WAL meanwhile
            logger.warning("a WAL checkpoint failed; the next one will retry", exc_info=True)
        finally:
            self._running = None

    async def close(self) -> None:
        running = self._running
        if running is not None:
            await asyncio.wait({running})
        self._connection.close()
        self._checkpointer.close()


@asynccontextmanager
async def bare_refund_direct_server(database_url: str) -> AsyncIterator[MCPServer]:
    """The bare server on a held ``sqlite3`` connection, its tables created and the bench order seeded."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise ValueError("the direct baseline is SQLite's (a database file)")
    db = Database(database_url)  # the tables and the seed only, as the other bare server makes them; not on the path
    try:
        async with db.engine.begin() as connection:
            await create_refund_tables(connection)
    finally:
        await db.dispose()
    queue = anyio.Lock(fast_acquire=True)
    writer = DirectWriter(url.database, queue)

    async def refund_create(order_id: OrderId, amount: Amount, currency: Currency, reason: Reason) -> RefundPublic:
        """Refund part or all of an order to the customer."""
        minor = int(Decimal(amount).scaleb(2))
        if minor <= 0:
            raise ToolError("A refund must be more than zero.")
        async with queue:
            return writer.refund(order_id, minor, currency, reason)

    try:
        yield refund_mcp_server("bare-refund-direct", refund_create)
    finally:
        await writer.close()
