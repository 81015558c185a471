"""Database.run_in_transaction on SQLite: this process's writers queue instead of meeting SQLITE_BUSY."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from sqlalchemy import text
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
