"""Releasing a reservation (server.effects.budget) gives every budget back exactly what it took: a calendar day's
total, and a rolling window's total wherever the window starts, as if the reservation had never been made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.money import Money
from scopes.policy.results import LedgerKey, Spend
from server import ledger
from server.effects import budget
from server.storage.database import Database

pytestmark = pytest.mark.anyio

AT = datetime(2026, 12, 7, 15, 20, 30, 250000, tzinfo=UTC)
DAY = LedgerKey("agent_daily", "agent:refunds", "EUR", "2026-12-07")
CAP = 5000


def _window(since: datetime) -> LedgerKey:
    return LedgerKey("customer_30d", "cus_1", "EUR", "rolling", since)


WINDOW_STARTS = [
    AT - timedelta(days=29, hours=3),  # whole days of sub-totals
    AT.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2),  # whole hours of the boundary day
    AT - timedelta(minutes=5),  # inside the boundary hour: counted from the entries
]


async def _reserve(db: Database, amount: int, audit_id: str, at: datetime = AT) -> None:
    async def work(session: AsyncSession) -> None:
        await ledger.totals(session, [DAY, _window(at - timedelta(days=30))], at=at)
        spends = [Spend(DAY, amount, CAP), Spend(_window(at - timedelta(days=30)), amount, None)]
        await ledger.reserve(session, spends, at=at, audit_id=audit_id, tool="refund_create")

    await db.run_in_transaction(work)


async def _totals(db: Database, since: datetime) -> tuple[int, int]:
    async def work(session: AsyncSession) -> tuple[int, int]:
        usage = await ledger.totals(session, [DAY, _window(since)], at=AT + timedelta(minutes=1), lock=False)
        day, window = usage[DAY.budget], usage["customer_30d"]
        assert isinstance(day, Money) and isinstance(window, Money)
        return day.minor, window.minor

    return await db.run_in_transaction(work)


async def test_a_release_gives_back_the_day_and_the_rolling_window_wherever_the_window_starts(db: Database) -> None:
    await _reserve(db, 700, "aud_kept", AT - timedelta(hours=5))
    await _reserve(db, 1250, "aud_failed")
    for since in WINDOW_STARTS:
        assert (await _totals(db, since))[1] == (1950 if since < AT - timedelta(hours=5) else 1250)

    async def release(session: AsyncSession) -> int:
        return await budget.release(session, "aud_failed", by_audit_id="aud_failure", at=AT + timedelta(seconds=9))

    assert await db.run_in_transaction(release) == 2
    for since in WINDOW_STARTS:
        day, window = await _totals(db, since)
        assert day == 700
        assert window == (700 if since < AT - timedelta(hours=5) else 0), since

    async with db.engine.connect() as connection:
        given_back = (
            await connection.execute(
                select(ledger.ENTRIES.c.amount, ledger.ENTRIES.c.at).where(ledger.ENTRIES.c.audit_id == "aud_failure")
            )
        ).all()
    assert sorted(amount for amount, _ in given_back) == [-1250, -1250]
    assert {at for _, at in given_back} == {AT}  # dated like the reservation, so every window drops both at once


async def test_a_released_amount_can_be_spent_again_up_to_the_cap(db: Database) -> None:
    await _reserve(db, CAP, "aud_failed")

    async def release(session: AsyncSession) -> int:
        return await budget.release(session, "aud_failed", by_audit_id="aud_failure", at=AT)

    await db.run_in_transaction(release)
    await _reserve(db, CAP, "aud_again")  # the whole cap fits again: the capped update refuses otherwise
    assert await _totals(db, WINDOW_STARTS[0]) == (CAP, CAP)


async def test_releasing_a_record_that_reserved_nothing_changes_nothing(db: Database) -> None:
    await _reserve(db, 300, "aud_kept")

    async def release(session: AsyncSession) -> int:
        return await budget.release(session, "aud_other", by_audit_id="aud_failure", at=AT)

    assert await db.run_in_transaction(release) == 0
    assert await _totals(db, WINDOW_STARTS[0]) == (300, 300)
