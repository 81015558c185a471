"""A rolling window's total, read from daily and hourly sub-totals, is exactly the per-entry sum ``at > since``.

The boundary cases: an entry at the window's start (out), a microsecond after it (in), earlier in the boundary hour
(out), later in it (in), at the next hour's first instant and the next day's (in), and entries far in the past (out).
A database from before the sub-totals is backfilled from its entries, so its windows do not read low.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.money import Money
from scopes.policy.results import LedgerKey, Spend
from server import ledger
from server.storage.database import Database

pytestmark = pytest.mark.anyio

SINCE = datetime(2026, 11, 1, 13, 27, 45, 123456, tzinfo=UTC)
KEY = LedgerKey("customer_30d", "cus_1", "EUR", "rolling", SINCE)


async def _spend(db: Database, at: datetime, amount: int, key: LedgerKey = KEY) -> None:
    async def work(session: AsyncSession) -> None:
        await ledger.totals(session, [key], at=at)  # takes the anchor lock, as the call path does
        await ledger.reserve(session, [Spend(key, amount, None)], at=at, audit_id=uuid.uuid4().hex, tool="t")

    await db.run_in_transaction(work)


async def _total(db: Database, since: datetime, *, lock: bool = True) -> int:
    key = LedgerKey(KEY.budget, KEY.key, KEY.unit, KEY.window, since)

    async def work(session: AsyncSession) -> int:
        usage = (await ledger.totals(session, [key], at=since + timedelta(days=30), lock=lock))[KEY.budget]
        assert isinstance(usage, Money)
        return usage.minor

    return await db.run_in_transaction(work)


async def test_a_rolling_window_counts_exactly_the_entries_after_its_start(db: Database) -> None:
    hour = SINCE.replace(minute=0, second=0, microsecond=0)
    spends = {
        SINCE - timedelta(days=3): 1,  # long before: out
        SINCE - timedelta(hours=2): 2,  # same day, an earlier hour: out
        hour: 4,  # the boundary hour, before the start: out
        SINCE: 8,  # exactly at the start: out (``at > since``)
        SINCE + timedelta(microseconds=1): 16,  # in
        hour + timedelta(minutes=59, seconds=59, microseconds=999999): 32,  # the boundary hour's last instant: in
        hour + timedelta(hours=1): 64,  # the next hour's first instant: in
        hour.replace(hour=23, minute=30): 128,  # the boundary day's last hour: in
        hour.replace(hour=0) + timedelta(days=1): 256,  # the next day's first instant: in
        SINCE + timedelta(days=29, hours=23): 512,  # the window's last day: in
    }
    for at, amount in spends.items():
        await _spend(db, at, amount)

    assert await _total(db, SINCE) == 16 + 32 + 64 + 128 + 256 + 512
    assert await _total(db, SINCE, lock=False) == 16 + 32 + 64 + 128 + 256 + 512  # mandate explain reads the same
    assert await _total(db, SINCE - timedelta(microseconds=1)) == 8 + 16 + 32 + 64 + 128 + 256 + 512
    assert await _total(db, hour - timedelta(microseconds=1)) == 4 + 8 + 16 + 32 + 64 + 128 + 256 + 512
    assert await _total(db, SINCE + timedelta(days=40)) == 0


async def test_a_rolling_window_total_equals_the_per_entry_sum_wherever_the_window_starts(db: Database) -> None:
    rng = random.Random(10)  # noqa: S311 - reproducible test data, not a secret
    start = datetime(2026, 10, 1, tzinfo=UTC)
    made: list[tuple[datetime, int]] = []
    for _ in range(120):
        at = start + timedelta(seconds=rng.randrange(0, 40 * 86400), microseconds=rng.randrange(0, 1_000_000))
        amount = rng.randrange(1, 10_000)
        await _spend(db, at, amount)
        made.append((at, amount))
    boundaries = [at for at, _ in made[:20]] + [
        start + timedelta(seconds=rng.randrange(0, 40 * 86400)) for _ in range(20)
    ]

    for since in boundaries:
        for edge in (since - timedelta(microseconds=1), since, since + timedelta(microseconds=1)):
            assert await _total(db, edge) == sum(amount for at, amount in made if at > edge), edge


async def test_a_database_from_before_the_sub_totals_is_backfilled_from_its_entries(db: Database) -> None:
    for at, amount in (
        (SINCE - timedelta(days=1), 1),
        (SINCE + timedelta(minutes=5), 2),
        (SINCE + timedelta(days=2), 4),
    ):
        await _spend(db, at, amount)
    other = LedgerKey("agent_daily", "agent", "EUR", "2026-11-03")
    await _spend(db, SINCE + timedelta(days=2), 100, other)  # a calendar-day spend has no sub-totals
    async with db.engine.begin() as connection:
        await connection.execute(delete(ledger.WINDOW_TOTALS))  # as a database written before the table existed
        assert await _total_in(connection) == 0

        assert await ledger.backfill_window_totals(connection) == 6  # three entries, a day and an hour slot each
        assert await ledger.backfill_window_totals(connection) == 0  # once only

    assert await _total(db, SINCE) == 2 + 4


async def _total_in(connection: AsyncConnection) -> int:
    rows = (await connection.execute(select(ledger.WINDOW_TOTALS.c.spent))).scalars().all()
    return sum(rows)


async def test_spends_of_one_call_to_two_rolling_budgets_each_count_in_their_own_window(db: Database) -> None:
    second = LedgerKey("agent_30d", "agent", "EUR", "rolling", SINCE)
    at = SINCE + timedelta(hours=1)

    async def work(session: AsyncSession) -> None:
        await ledger.totals(session, [KEY, second], at=at)
        spends = [Spend(KEY, 5, None), Spend(second, 7, None)]
        await ledger.reserve(session, spends, at=at, audit_id="aud_1", tool="t")

    await db.run_in_transaction(work)

    async def read(session: AsyncSession) -> dict[str, object]:
        return dict(await ledger.totals(session, [KEY, second], at=at, lock=False))

    usage = await db.run_in_transaction(read)
    assert usage == {"customer_30d": Money.from_minor(5, "EUR"), "agent_30d": Money.from_minor(7, "EUR")}


async def _writers_waiting(db: Database) -> int:
    """Transactions waiting for a lock another transaction holds: row locks on PostgreSQL, the writer queue on
    SQLite (where a transaction holds the whole database)."""
    if db.is_sqlite:
        assert db._write_lock is not None
        return db._write_lock.statistics().tasks_waiting
    async with db.engine.connect() as connection:
        query = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int((await connection.execute(query)).scalar_one())


async def test_a_window_read_that_waited_for_its_anchor_counts_the_spend_committed_meanwhile(db: Database) -> None:
    at = SINCE + timedelta(hours=2)
    await _spend(db, SINCE + timedelta(hours=1), 100)  # the anchor row exists: the next reads go in one round trip
    holding, release = anyio.Event(), anyio.Event()
    seen: list[int] = []

    async def spend_and_hold(session: AsyncSession) -> None:
        await ledger.totals(session, [KEY], at=at)
        await ledger.reserve(session, [Spend(KEY, 5, None)], at=at, audit_id="aud_held", tool="t")
        holding.set()
        await release.wait()  # committed only once the other reader is waiting for the anchor

    async def read() -> None:
        seen.append(await _total(db, SINCE))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(db.run_in_transaction, spend_and_hold)
            await holding.wait()
            group.start_soon(read)
            while await _writers_waiting(db) < 1:  # noqa: ASYNC110 - a state of another session: polled, bounded
                await anyio.sleep(0.02)
            release.set()
    assert seen == [105]
