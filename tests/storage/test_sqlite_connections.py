"""SQLite transactions whose edges run on the event loop's thread (server.storage.sqlite): the write lock taken at
once when it is free, waited for on aiosqlite's thread when another connection holds it, a failing commit reported,
and the write-ahead log checkpointed off the committing statement; new connections switching one new file to WAL at
once all get there."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from sqlalchemy import column, insert, table, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from server.storage import prepared
from server.storage.database import Database
from server.storage.sqlite import BUSY_TIMEOUT_MS, Checkpoints, switch_to_wal

pytestmark = pytest.mark.anyio

COUNTER = table("counter", column("id"), column("value"))
INCREMENT = prepared.Prepared(update(COUNTER).where(COUNTER.c.id == 1).values(value=COUNTER.c.value + 1))
NOTES = table("notes", column("body"))
ADD_NOTE = prepared.Prepared(insert(NOTES))


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'edges.db'}")
    async with database.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)"))
        await connection.execute(text("INSERT INTO counter (id, value) VALUES (1, 0)"))
        await connection.execute(text("CREATE TABLE notes (body TEXT NOT NULL)"))
        await connection.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        await connection.execute(
            text(
                "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL "
                "REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    return database


async def _counter(db: Database) -> int:
    async with db.session() as session:
        connection = await session.connection()
        return int((await connection.execute(text("SELECT value FROM counter WHERE id = 1"))).scalar_one())


async def test_a_transaction_of_prepared_statements_never_lets_other_work_run_while_it_holds_the_write_lock(
    db: Database,
) -> None:
    ticks = 0
    seen: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async def work(session: AsyncSession) -> None:
        seen.append(ticks)  # before the transaction's BEGIN: it begins with the first statement
        for _ in range(5):
            await prepared.run(session, INCREMENT)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(ticker)
            await anyio.lowlevel.checkpoint()
            await db.run_in_transaction(work)
            after = ticks
            group.cancel_scope.cancel()
        assert seen == [after], "the event loop ran other work between the transaction's BEGIN and its COMMIT"
        assert await _counter(db) == 5
    finally:
        await db.dispose()


async def test_a_write_lock_held_by_another_connection_is_waited_for_without_stopping_the_event_loop(
    db: Database, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "edges.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process's writer, say
    other.execute("UPDATE counter SET value = 100 WHERE id = 1")
    loop_served = anyio.Event()
    done = anyio.Event()

    async def work(session: AsyncSession) -> None:
        await prepared.run(session, INCREMENT)

    async def write() -> None:
        await db.run_in_transaction(work)
        done.set()

    async def serve_meanwhile() -> None:
        for _ in range(20):  # the loop keeps running other tasks while the transaction waits for the lock
            await anyio.sleep(0.01)
        loop_served.set()

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                group.start_soon(write)
                group.start_soon(serve_meanwhile)
                await loop_served.wait()
                assert not done.is_set()
                await anyio.to_thread.run_sync(other.commit)  # the other writer finishes; ours goes on after it
                await done.wait()
        assert await _counter(db) == 101
    finally:
        other.close()
        await db.dispose()


async def test_a_commit_that_fails_raises_and_leaves_nothing_written(db: Database) -> None:
    async def orphan(session: AsyncSession) -> None:  # the deferred foreign key is checked only at COMMIT
        connection = await session.connection()
        await connection.execute(text("INSERT INTO child (id, parent_id) VALUES (1, 42)"))
        await prepared.run(session, INCREMENT)

    try:
        with pytest.raises(IntegrityError, match="FOREIGN KEY"):
            await db.run_in_transaction(orphan)
        assert await _counter(db) == 0
        async with db.session() as session:
            connection = await session.connection()
            assert (await connection.execute(text("SELECT count(*) FROM child"))).scalar_one() == 0
        await db.run_in_transaction(lambda session: prepared.run(session, INCREMENT))  # the connection is usable
        assert await _counter(db) == 1
    finally:
        await db.dispose()


async def test_the_write_ahead_log_is_checkpointed_beside_the_commits_and_starts_over_after_each_checkpoint(
    db: Database, tmp_path: Path
) -> None:
    rounds = 5
    body = "x" * 3000  # about a page a commit
    wal = tmp_path / "edges.db-wal"

    async def work(session: AsyncSession) -> None:
        await prepared.run(session, ADD_NOTE, {"body": body})

    checkpoints = db._checkpoints
    assert checkpoints is not None
    restarts: list[int] = []
    commits = 0

    async def commit() -> None:
        nonlocal commits
        await db.run_in_transaction(work)
        commits += 1
        await anyio.lowlevel.checkpoint()  # as a server's event loop turns between two requests

    try:
        for round_ in range(1, rounds + 1):
            for _ in range(Checkpoints.EVERY):
                await commit()  # the last of these starts the round's checkpoint
            while checkpoints.done < round_:
                await commit()  # writers go on while it runs: a checkpoint that only raced them never catches up
            await commit()  # the first commit after a complete checkpoint starts the log over
            restarts.append(_wal_restarts(wal))
        assert checkpoints.done == rounds
        assert restarts == sorted(set(restarts)), f"the log did not start over after every checkpoint: {restarts}"
        async with db.session() as session:
            connection = await session.connection()
            assert (await connection.execute(text("SELECT count(*) FROM notes"))).scalar_one() == commits
    finally:
        await db.dispose()


def _wal_restarts(wal: Path) -> int:
    """The WAL header's checkpoint sequence number, which SQLite increments each time it starts the log over
    (SQLite file format, section 4.1, "WAL File Format")."""
    with wal.open("rb") as log:
        header = log.read(16)
    return int.from_bytes(header[12:16], "big")


def test_connections_switching_one_new_file_to_wal_at_once_all_succeed(tmp_path: Path) -> None:
    """Without the retry about one trial in four has a connection refused "database is locked" at the switch."""
    errors: list[str] = []
    for trial in range(40):
        path = tmp_path / f"new-{trial}.db"
        start = threading.Barrier(4)

        def connect_and_switch(path: Path = path, start: threading.Barrier = start) -> None:
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            try:
                connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                start.wait()
                mode = switch_to_wal(connection.cursor())
                if mode is None or mode[0] != "wal":
                    errors.append(f"journal mode {mode}")
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("CREATE TABLE IF NOT EXISTS t (x)")
                connection.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                errors.append(str(exc))
            finally:
                connection.close()

        threads = [threading.Thread(target=connect_and_switch) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
