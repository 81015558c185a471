"""Giving back a ledger reservation whose effect definitely did not happen (docs/effects.md, "Budgets").

The decision's transaction reserved the amounts with :func:`server.ledger.reserve`, which wrote one
``ledger_entries`` row per budget naming the intent's audit record. Releasing subtracts each from its bucket and
appends a negative entry dated like the reservation (so a rolling window drops both at the same moment), naming
the audit record of the failure. An amount in doubt is never released: only a definite refusal or a provider that
definitely holds no object gives it back.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, insert, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from server.ledger import BUCKETS, ENTRIES


async def release(session: AsyncSession, audit_id: str, *, by_audit_id: str, at: datetime) -> int:
    """Give back what the record ``audit_id`` reserved, in the caller's transaction; the number of budgets."""
    connection = await session.connection()
    query = select(ENTRIES).where(ENTRIES.c.audit_id == audit_id, ENTRIES.c.amount > 0)
    rows = (await connection.execute(query)).mappings().all()
    released = 0
    for row in sorted(rows, key=lambda r: (r["budget"], r["holder"], r["unit"], r["period"])):
        match = and_(
            BUCKETS.c.budget == row["budget"],
            BUCKETS.c.holder == row["holder"],
            BUCKETS.c.unit == row["unit"],
            BUCKETS.c.period == row["period"],
        )
        await connection.execute(
            update(BUCKETS).where(match).values(spent=BUCKETS.c.spent - row["amount"], updated_at=at)
        )
        entry = {
            "budget": row["budget"],
            "holder": row["holder"],
            "unit": row["unit"],
            "period": row["period"],
            "amount": -row["amount"],
            "at": row["at"],
            "tool": row["tool"],
            "audit_id": by_audit_id,
        }
        await connection.execute(insert(ENTRIES), [entry])
        released += 1
    return released
