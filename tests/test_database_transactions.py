"""Database.run_in_transaction on SQLite: this process's writers queue instead of meeting SQLITE_BUSY."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sqlalchemy import event, text
from sqlmodel.ext.asyncio.session import AsyncSession

from server.storage.database import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'queue.db'}")
    async with database.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)"))
        await connection.execute(text("INSERT INTO counter (id, value) VALUES (1, 0)"))
    return database


async def test_concurrent_read_modify_write_transactions_all_commit_in_turn(db: Database) -> None:
    async def increment(session: AsyncSession) -> None:
        connection = await session.connection()
        value = (await connection.execute(text("SELECT value FROM counter WHERE id = 1"))).scalar_one()
        await anyio.lowlevel.checkpoint()  # let the other writers try to start meanwhile
        await connection.execute(text("UPDATE counter SET value = :value WHERE id = 1"), {"value": value + 1})

    try:
        async with anyio.create_task_group() as group:
            for _ in range(40):
                group.start_soon(db.run_in_transaction, increment)
        async with db.session() as session:
            connection = await session.connection()
            assert (await connection.execute(text("SELECT value FROM counter WHERE id = 1"))).scalar_one() == 40
    finally:
        await db.dispose()


async def test_a_transaction_that_waits_for_another_of_its_own_fails_instead_of_hanging(db: Database) -> None:
    async def inner(session: AsyncSession) -> None:
        return None

    async def outer(session: AsyncSession) -> None:
        await db.run_in_transaction(inner)

    try:
        with anyio.fail_after(5), pytest.raises(RuntimeError, match="already held"):
            await db.run_in_transaction(outer)
    finally:
        await db.dispose()


async def test_a_query_cancelled_mid_flight_leaves_no_close_that_never_finishes(db: Database) -> None:
    # SQLAlchemy's terminate of an invalidated aiosqlite connection closes it gracefully in a shielded task, then
    # force-stops the worker thread when cancelled; aiosqlite's close then waits forever for the stopped thread, and
    # the event loop's shutdown waits forever for that task. A SQLite connection is closed plainly instead.
    started, release = threading.Event(), threading.Event()

    def in_flight() -> int:
        started.set()
        release.wait(30)
        return 1

    await db.dispose()  # new connections from here on know the function

    @event.listens_for(db.engine.sync_engine, "connect")
    def _register(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("in_flight", 0, in_flight)

    async def query() -> None:
        async with db.session() as session:
            connection = await session.connection()
            await connection.execute(text("SELECT in_flight()"))

    def closing() -> list[asyncio.Task[Any]]:
        return [task for task in asyncio.all_tasks() if "aiosqlite" in repr(task) and not task.done()]

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(query)
            await anyio.to_thread.run_sync(started.wait, 30)
            group.cancel_scope.cancel()
            release.set()
        await db.dispose()
        if pending := closing():  # a close that can finish does so at once; one waiting on a stopped thread never
            await asyncio.wait(pending, timeout=30)
        assert not closing()
    finally:
        release.set()
        for task in closing():  # never leave a close that cannot finish to the event loop's shutdown
            task.cancel()
        await db.dispose()
