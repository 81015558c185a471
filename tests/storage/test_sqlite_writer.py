"""The held SQLite writer (server.storage.sqlite_writer): the ORM and the prepared statements share its one
transaction, a failure undoes both, and a unit of work cancelled while aiosqlite's thread runs its statement leaves
nothing written and a writer that works."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import column, event, table, text, update
from sqlmodel.ext.asyncio.session import AsyncSession

from server.storage import prepared
from server.storage.database import Database

pytestmark = pytest.mark.anyio

COUNTER = table("counter", column("id"), column("value"))
INCREMENT = prepared.Prepared(update(COUNTER).where(COUNTER.c.id == 1).values(value=COUNTER.c.value + 1))


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'writer.db'}")
    async with database.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)"))
        await connection.execute(text("INSERT INTO counter (id, value) VALUES (1, 0)"))
        await connection.execute(text("CREATE TABLE notes (body TEXT NOT NULL)"))
    return database


async def _read(db: Database, sql: str) -> int:
    async with db.session() as session:
        connection = await session.connection()
        return int((await connection.execute(text(sql))).scalar_one())


async def test_orm_work_and_prepared_statements_commit_together_in_the_writers_one_transaction(db: Database) -> None:
    async def work(session: AsyncSession) -> None:
        await prepared.run(session, INCREMENT)
        await (await session.connection()).execute(text("INSERT INTO notes (body) VALUES ('through the session')"))
        await prepared.run(session, INCREMENT)

    try:
        await db.run_in_transaction(work)
        await db.run_in_transaction(work)
        assert await _read(db, "SELECT value FROM counter WHERE id = 1") == 4
        assert await _read(db, "SELECT count(*) FROM notes") == 2
    finally:
        await db.dispose()


async def test_a_failure_after_orm_and_prepared_writes_undoes_both_and_the_next_unit_of_work_commits(
    db: Database,
) -> None:
    async def failing(session: AsyncSession) -> None:
        await prepared.run(session, INCREMENT)
        await (await session.connection()).execute(text("INSERT INTO notes (body) VALUES ('undone')"))
        raise RuntimeError("the tool failed after writing")

    try:
        with pytest.raises(RuntimeError, match="after writing"):
            await db.run_in_transaction(failing)
        assert await _read(db, "SELECT value FROM counter WHERE id = 1") == 0
        assert await _read(db, "SELECT count(*) FROM notes") == 0
        await db.run_in_transaction(lambda session: prepared.run(session, INCREMENT))
        assert await _read(db, "SELECT value FROM counter WHERE id = 1") == 1
    finally:
        await db.dispose()


async def test_a_unit_of_work_cancelled_mid_statement_writes_nothing_and_the_writer_serves_the_next(
    db: Database,
) -> None:
    started = threading.Event()

    def mark_started() -> int:
        started.set()
        return 1

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("mark_started", 0, mark_started)

    event.listen(db.engine.sync_engine, "connect", on_connect)
    await db.dispose()  # every connection from here on has the function
    slow = text(
        "WITH RECURSIVE c(x) AS (SELECT mark_started() UNION ALL SELECT x + 1 FROM c WHERE x < 1000000) "
        "SELECT count(*) FROM c"
    )

    async def slow_work(session: AsyncSession) -> None:
        await prepared.run(session, INCREMENT)  # on the loop's thread, in the transaction
        await (await session.connection()).execute(slow)  # the session's: on aiosqlite's thread, for seconds

    cancelled = anyio.CancelScope()

    async def run_slow() -> None:
        with cancelled:
            await db.run_in_transaction(slow_work)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(run_slow)
            assert await anyio.to_thread.run_sync(started.wait, 120), "the slow statement never started"
            cancelled.cancel()  # while aiosqlite's thread is inside the statement
        assert cancelled.cancelled_caught
        await db.run_in_transaction(lambda session: prepared.run(session, INCREMENT))
        assert await _read(db, "SELECT value FROM counter WHERE id = 1") == 1  # the cancelled increment is gone
    finally:
        await db.dispose()
