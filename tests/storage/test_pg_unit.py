"""A PostgreSQL unit of work on a pooled psycopg connection (server.storage.pg_unit): its BEGIN and COMMIT are its
own, yet ORM work in it is in the same transaction, a lost connection is retried only before the commit, and no
connection goes back to the pool in autocommit mode or inside a transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from sqlalchemy import bindparam, func, insert, select, text
from sqlmodel.ext.asyncio.session import AsyncSession

from server.ledger import LedgerBucket, LedgerEntry
from server.storage.database import Database
from server.storage.prepared import Prepared, defer, run

pytestmark = pytest.mark.anyio

ENTRIES = LedgerEntry.__table__  # type: ignore[attr-defined]
BUCKETS = LedgerBucket.__table__  # type: ignore[attr-defined]
INSERT_ENTRY = Prepared(insert(ENTRIES))
COUNT = Prepared(select(func.count()).select_from(ENTRIES))
PID = Prepared(select(func.pg_backend_pid()))
LOCK_BUCKET = Prepared(select(BUCKETS.c.spent).where(BUCKETS.c.holder == bindparam("holder")).with_for_update())


@pytest.fixture
def pg(db: Database) -> Database:
    if db.is_sqlite:
        pytest.skip("a PostgreSQL unit of work")
    return db


def _entry(audit_id: str) -> dict[str, Any]:
    at = datetime.now(UTC)
    return {"budget": "daily", "holder": "agent", "unit": "EUR", "period": "p", "amount": 1, "at": at,
            "tool": "t", "audit_id": audit_id}  # fmt: skip


async def _count(db: Database) -> int:
    return int((await db.run_in_transaction(lambda session: run(session, COUNT))).scalar())


class Refused(RuntimeError):
    pass


async def test_orm_work_before_any_statement_of_the_unit_is_inside_its_transaction(pg: Database) -> None:
    async def orm_then_refuse(session: AsyncSession) -> None:
        session.add(LedgerEntry(**_entry("aud_orm_first")))
        await session.flush()  # the unit's first statement, sent by the ORM
        await run(session, INSERT_ENTRY, _entry("aud_prepared_second"))
        raise Refused

    with pytest.raises(Refused):
        await pg.run_in_transaction(orm_then_refuse)
    assert await _count(pg) == 0  # neither row: they were in one transaction, rolled back

    async def orm_then_queued(session: AsyncSession) -> None:
        session.add(LedgerEntry(**_entry("aud_orm")))
        await session.flush()
        await defer(session, INSERT_ENTRY, _entry("aud_queued"), expect=1)

    await pg.run_in_transaction(orm_then_queued)
    assert await _count(pg) == 2


async def test_a_unit_whose_connection_is_lost_before_its_commit_runs_again_on_a_fresh_one(pg: Database) -> None:
    attempts: list[int] = []

    async def work(session: AsyncSession) -> None:
        pid = int((await run(session, PID)).scalar())
        attempts.append(pid)
        if len(attempts) == 1:
            async with pg.engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                await other.commit()
        await defer(session, INSERT_ENTRY, _entry(f"aud_attempt_{len(attempts)}"), expect=1)
        await run(session, COUNT)  # sends the queued write: on the dead connection, this fails

    await pg.run_in_transaction(work)
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    assert await _count(pg) == 1  # the second attempt's row only


async def test_a_connection_goes_back_to_the_pool_as_psycopg_keeps_it(pg: Database) -> None:
    pid = int((await pg.run_in_transaction(lambda session: run(session, PID))).scalar())
    async with pg.session() as session:  # the pool's one connection, again
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        assert (await connection.execute(text("SELECT pg_backend_pid()"))).scalar() == pid
        assert raw.driver_connection.autocommit is False  # type: ignore[union-attr]
        first = (await connection.execute(text("SELECT txid_current()"))).scalar()
        assert (await connection.execute(text("SELECT txid_current()"))).scalar() == first  # one transaction


async def test_a_unit_cancelled_while_it_waits_holds_no_lock_afterwards(pg: Database) -> None:
    bucket = {"budget": "daily", "holder": "held", "unit": "EUR", "period": "p", "spent": 0,
              "updated_at": datetime.now(UTC)}  # fmt: skip
    await pg.run_in_transaction(lambda session: run(session, Prepared(insert(BUCKETS)), bucket))
    waiting = anyio.Event()

    async def locker(session: AsyncSession) -> None:
        waiting.set()
        await run(session, LOCK_BUCKET, {"holder": "held"})  # waits for the lock held below

    async with pg.engine.connect() as holder:
        await holder.execute(text("SELECT 1 FROM ledger_buckets WHERE holder = 'held' FOR UPDATE"))
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(pg.run_in_transaction, locker)
                await waiting.wait()
                # the server's state, not an event of this process: polled until the locker's statement waits
                while not await _lock_waiters(holder):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                group.cancel_scope.cancel()
        await holder.rollback()

    async def lock_at_once(session: AsyncSession) -> None:
        connection = await session.connection()
        await connection.execute(text("SELECT 1 FROM ledger_buckets WHERE holder = 'held' FOR UPDATE NOWAIT"))

    for _ in range(3):  # whichever pooled connection comes back, none holds the row
        await pg.run_in_transaction(lock_at_once)


async def _lock_waiters(connection: Any) -> int:
    found = await connection.execute(
        text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
    )
    return int(found.scalar())


async def test_a_batch_returns_what_psycopg_returns_and_raises_the_first_failure_after_which_nothing_ran(
    pg: Database,
) -> None:
    import psycopg

    from server.storage.pg_batch import exchange

    values = [datetime(2026, 12, 3, 8, 0, 0, 123456, tzinfo=UTC), None, "é'\\%", b"\x00\x01", 2**40, 1.5, True]
    sql = b"SELECT $1::timestamptz, $2::text, $3::text, $4::bytea, $5::bigint, $6::float8, $7::boolean"
    async with pg.engine.connect() as held:
        connection: Any = (await held.get_raw_connection()).driver_connection
        await connection.set_autocommit(True)
        raw = psycopg.AsyncRawCursor(connection)
        await raw.execute(sql, values)
        expected = await raw.fetchall()
        for _ in range(3):  # prepared the first time, then reused
            assert (await exchange(connection, [(sql, values)]))[0] == (expected, 1)
        with pytest.raises(psycopg.errors.DivisionByZero):
            await exchange(
                connection,
                [(b"BEGIN", None), (b"SELECT 1 / $1::int", [0]), (b"CREATE TABLE never_made (x int)", None)],
            )
        await connection.rollback()
        found = await connection.execute("SELECT to_regclass('never_made') IS NULL")
        assert await found.fetchone() == (True,)
        await connection.set_autocommit(False)


async def test_past_the_prepared_statements_kept_a_statement_is_sent_unnamed_with_the_same_answer(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import server.storage.pg_batch as batch

    async with pg.engine.connect() as held:
        connection: Any = (await held.get_raw_connection()).driver_connection
        await connection.set_autocommit(True)
        monkeypatch.setattr(batch, "_MAX_PREPARED", 0)
        assert await batch.exchange(connection, [(b"SELECT $1::int + 1", [41])]) == [([(42,)], 1)]
        monkeypatch.undo()
        assert await batch.exchange(connection, [(b"SELECT $1::int + 1", [41])]) == [([(42,)], 1)]  # now prepared
        await connection.set_autocommit(False)


async def test_a_value_that_cannot_be_sent_fails_before_anything_is_and_leaves_the_connection_as_it_was(
    pg: Database,
) -> None:
    import psycopg

    from server.storage.pg_batch import exchange

    async with pg.engine.connect() as held:
        connection: Any = (await held.get_raw_connection()).driver_connection
        await connection.set_autocommit(True)
        with pytest.raises(psycopg.DataError):
            await exchange(connection, [(b"BEGIN", None), (b"SELECT $1::text", ["a\x00b"])])
        assert connection.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
        assert connection.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE  # BEGIN was never sent
        assert await exchange(connection, [(b"SELECT $1::text", ["ab"])]) == [([("ab",)], 1)]
        await connection.set_autocommit(False)


async def test_a_statement_met_twice_in_one_round_trip_is_prepared_once(pg: Database) -> None:
    from server.storage.pg_batch import exchange

    sql = b"SELECT $1::int * 2 AS twice_in_one_pipeline"
    async with pg.engine.connect() as held:
        connection: Any = (await held.get_raw_connection()).driver_connection
        await connection.set_autocommit(True)
        assert await exchange(connection, [(sql, [1]), (sql, [2]), (sql, [3])]) == [
            ([(2,)], 1),
            ([(4,)], 1),
            ([(6,)], 1),
        ]
        found = await connection.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%twice_in_one_pipeline'"
        )
        assert await found.fetchone() == (1,)
        await connection.set_autocommit(False)
