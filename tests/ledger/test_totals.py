"""The totals a call's decision reads: every budget it needs, as stored, whatever mix of calendar and rolling budgets,
existing and missing buckets (on SQLite they are read in one statement, on PostgreSQL in one round trip)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.money import Money
from scopes.policy.results import LedgerKey, Spend
from server import ledger
from server.storage.database import Database

pytestmark = pytest.mark.anyio

AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
DAILY = LedgerKey("agent_daily", "agent:a", "EUR", "2026-11-20")
COUNTED = LedgerKey("agent_calls", "agent:a", "count", "2026-11-20")
ROLLING = LedgerKey("customer_30d", "cus_1", "EUR", "rolling", AT - timedelta(days=30))
UNSEEN = LedgerKey("agent_large_daily", "agent:b", "EUR", "2026-11-20")


async def _spend(db: Database, spends: list[Spend], at: datetime = AT) -> None:
    async def work(session: AsyncSession) -> None:
        await ledger.totals(session, [spend.ledger for spend in spends], at=at)
        await ledger.reserve(session, spends, at=at, audit_id="aud_t", tool="t")

    await db.run_in_transaction(work)


async def _totals(db: Database, needs: list[LedgerKey], *, lock: bool) -> dict[str, int | Money]:
    async def work(session: AsyncSession) -> dict[str, int | Money]:
        return await ledger.totals(session, needs, at=AT, lock=lock)

    return await db.run_in_transaction(work)


async def _buckets(db: Database) -> int:
    async with db.session() as session:
        return int((await session.exec(select(func.count()).select_from(ledger.BUCKETS))).one()[0])


async def test_every_needed_total_reads_what_was_spent_in_its_own_budget(db: Database) -> None:
    await _spend(db, [Spend(DAILY, 1250, 50_000), Spend(COUNTED, 1, 10), Spend(ROLLING, 700, None)])
    await _spend(db, [Spend(DAILY, 50, 50_000), Spend(ROLLING, 5, None)], at=AT + timedelta(minutes=1))
    await _spend(db, [Spend(ROLLING, 9, None)], at=AT - timedelta(days=31))  # before the window: not counted

    for lock in (True, False):
        usage = await _totals(db, [ROLLING, DAILY, COUNTED], lock=lock)
        assert usage == {
            "agent_daily": Money.from_minor(1300, "EUR"),
            "agent_calls": 1,
            "customer_30d": Money.from_minor(705, "EUR"),
        }


async def test_a_budget_never_spent_from_reads_zero_and_a_locked_read_creates_its_bucket(db: Database) -> None:
    await _spend(db, [Spend(DAILY, 300, None)])
    before = await _buckets(db)

    assert await _totals(db, [UNSEEN, DAILY], lock=False) == {
        "agent_daily": Money.from_minor(300, "EUR"),
        "agent_large_daily": Money.from_minor(0, "EUR"),
    }
    assert await _buckets(db) == before  # explaining writes nothing

    usage = await _totals(db, [UNSEEN, ROLLING, DAILY], lock=True)
    assert usage == {
        "agent_daily": Money.from_minor(300, "EUR"),
        "agent_large_daily": Money.from_minor(0, "EUR"),
        "customer_30d": Money.from_minor(0, "EUR"),
    }
    assert await _buckets(db) == before + 2  # the anchor rows now exist, to be locked by the next call


def test_an_entrys_sub_total_slots_are_its_utc_day_and_hour_whatever_zone_its_time_is_given_in() -> None:
    from zoneinfo import ZoneInfo

    for at in (
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(999, 3, 9, 0, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("Europe/Paris")),  # 00:30 UTC
    ):
        utc = at.astimezone(UTC)
        assert ledger.slots_of(at) == (f"d{utc:%Y-%m-%d}", f"h{utc:%Y-%m-%dT%H}")
    assert ledger.slots_of(datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("Europe/Paris"))) == (
        "d2026-03-29",
        "h2026-03-29T00",
    )


async def test_a_capped_spend_that_no_longer_fits_fails_its_transaction_and_spends_nothing(db: Database) -> None:
    await _spend(db, [Spend(DAILY, 900, 1000)])

    async def overspend(session: AsyncSession) -> None:  # as a caller that skipped the decision's locked read
        await ledger.reserve(session, [Spend(DAILY, 200, 1000), Spend(ROLLING, 5, None)], at=AT, audit_id="a", tool="t")

    with pytest.raises(ledger.LedgerConflict, match="budget agent_daily: 200 EUR does not fit under 1000"):
        await db.run_in_transaction(overspend)
    assert await _totals(db, [DAILY, ROLLING], lock=False) == {
        "agent_daily": Money.from_minor(900, "EUR"),
        "customer_30d": Money.from_minor(0, "EUR"),
    }
