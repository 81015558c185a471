"""Revision 0003 on a ledger whose released reservations were left in the rolling sub-totals: the sub-totals are
rebuilt from the entries, so every window reads what was spent and not given back; calendar days are untouched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from scopes.money import Money
from scopes.policy.results import LedgerKey
from server import ledger
from server.storage import migrate
from server.storage.database import Database

pytestmark = pytest.mark.anyio

RELEASED_AT = datetime(2026, 12, 6, 22, 40, 1, 500000, tzinfo=UTC)
KEPT_AT = datetime(2026, 12, 7, 9, 5, tzinfo=UTC)


def _entry(amount: int, at: datetime, audit_id: str, period: str = "rolling") -> dict[str, Any]:
    return {
        "budget": "customer_refunds_30d" if period == "rolling" else "agent_refunds_daily",
        "holder": "cus_1001" if period == "rolling" else "agent:refunds",
        "unit": "EUR",
        "period": period,
        "amount": amount,
        "at": at,
        "tool": "refund_create",
        "audit_id": audit_id,
    }


def _slot(slot: str, spent: int) -> dict[str, Any]:
    return {"budget": "customer_refunds_30d", "holder": "cus_1001", "unit": "EUR", "slot": slot, "spent": spent}


async def _window(db: Database, since: datetime) -> int:
    key = LedgerKey("customer_refunds_30d", "cus_1001", "EUR", "rolling", since)

    async def work(session: Any) -> int:
        usage = (await ledger.totals(session, [key], at=KEPT_AT, lock=False))[key.budget]
        assert isinstance(usage, Money)
        return usage.minor

    return await db.run_in_transaction(work)


async def test_sub_totals_left_with_released_amounts_are_rebuilt_from_the_entries(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        await migrate.upgrade(db, "0002")
        async with db.engine.begin() as connection:
            await connection.execute(
                insert(ledger.ENTRIES),
                [
                    _entry(1250, RELEASED_AT, "aud_refused"),
                    _entry(-1250, RELEASED_AT, "aud_refusal"),  # the release, dated like the reservation
                    _entry(700, KEPT_AT, "aud_kept"),
                    _entry(500, KEPT_AT, "aud_kept", period="2026-12-07"),  # a calendar day: no sub-totals
                ],
            )
            # what a release left before this revision: the refused 12.50 still in its day and hour
            await connection.execute(
                insert(ledger.WINDOW_TOTALS),
                [
                    _slot("d2026-12-06", 1250),
                    _slot("h2026-12-06T22", 1250),
                    _slot("d2026-12-07", 700),
                    _slot("h2026-12-07T09", 700),
                ],
            )
        assert await _window(db, KEPT_AT - timedelta(days=30)) == 1950

        assert await migrate.upgrade(db) == ("0002", migrate.head_revision())

        async with db.engine.connect() as connection:
            rows = (await connection.execute(select(ledger.WINDOW_TOTALS.c.slot, ledger.WINDOW_TOTALS.c.spent))).all()
        assert dict(rows) == {"d2026-12-06": 0, "h2026-12-06T22": 0, "d2026-12-07": 700, "h2026-12-07T09": 700}
        for since in (KEPT_AT - timedelta(days=30), RELEASED_AT - timedelta(minutes=1), KEPT_AT - timedelta(hours=1)):
            assert await _window(db, since) == 700
        assert await migrate.schema_differences(db) == []
    finally:
        await db.dispose()
