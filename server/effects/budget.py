"""Giving back a ledger reservation whose effect definitely did not happen (docs/effects.md, "Budgets").

The decision's transaction reserved the amounts with :func:`server.ledger.reserve`, which wrote one
``ledger_entries`` row per budget naming the intent's audit record, added to each budget's total and, for a rolling
window, to the UTC day and hour sub-totals its entry falls in. Releasing undoes all three: it subtracts each amount
from its bucket, appends a negative entry dated like the reservation, naming the audit record of the failure, and
takes the amount off the same two sub-totals, so a rolling window reads as if the reservation had never been made,
wherever it starts. An amount in doubt is never released: only a definite refusal or a provider that definitely
holds no object gives it back.

The statements are prepared (:mod:`server.storage.prepared`) and the writes go with the outcome's other writes;
buckets are taken in the ledger's global order (sorted by key), after the tool's own rows, as the decision took them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import and_, bindparam, insert, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from server.ledger import BUCKETS, ENTRIES, add_to_slots, slots_of
from server.storage.prepared import Prepared, defer, defer_many, run
from server.storage.types import UTCDateTime

ROLLING = "rolling"
"""The ``period`` of a rolling window's entries (its total is read from the sub-totals)."""

_RESERVED = Prepared(
    select(
        ENTRIES.c.budget,
        ENTRIES.c.holder,
        ENTRIES.c.unit,
        ENTRIES.c.period,
        ENTRIES.c.amount,
        ENTRIES.c.at,
        ENTRIES.c.tool,
    ).where(ENTRIES.c.audit_id == bindparam("k_audit"), ENTRIES.c.amount > 0)
)
_GIVE_BACK = Prepared(
    update(BUCKETS)
    .where(
        and_(
            BUCKETS.c.budget == bindparam("k_budget"),
            BUCKETS.c.holder == bindparam("k_holder"),
            BUCKETS.c.unit == bindparam("k_unit"),
            BUCKETS.c.period == bindparam("k_period"),
        )
    )
    .values(spent=BUCKETS.c.spent - bindparam("k_amount"), updated_at=bindparam("k_at", type_=UTCDateTime()))
)
_ADD_ENTRY = Prepared(insert(ENTRIES))


class ReleaseFailed(RuntimeError):
    """A reserved amount's budget total was not there to give it back to: the outcome's transaction fails."""


def _no_total(budget: str) -> Callable[[int], Exception]:
    def mismatch(_changed: int) -> Exception:
        return ReleaseFailed(f"budget {budget}: no total to give the reservation back to")

    return mismatch


async def release(session: AsyncSession, audit_id: str, *, by_audit_id: str, at: datetime) -> int:
    """Give back what the record ``audit_id`` reserved, in the caller's transaction; the number of budgets."""
    reserved = (await run(session, _RESERVED, {"k_audit": audit_id})).rows
    ordered = sorted(reserved, key=lambda row: (row[0], row[1], row[2], row[3]))
    entries: list[dict[str, object]] = []
    slots: dict[tuple[str, str, str, str], int] = {}
    for budget, holder, unit, period, amount, reserved_at, tool in ordered:
        key = {"k_budget": budget, "k_holder": holder, "k_unit": unit, "k_period": period}
        await defer(
            session,
            _GIVE_BACK,
            {**key, "k_amount": amount, "k_at": at},
            expect=1,
            mismatch=_no_total(budget),
        )
        entries.append(
            {
                "budget": budget,
                "holder": holder,
                "unit": unit,
                "period": period,
                "amount": -amount,
                "at": reserved_at,
                "tool": tool,
                "audit_id": by_audit_id,
            }
        )
        if period == ROLLING:
            for slot in slots_of(reserved_at):
                slots[(budget, holder, unit, slot)] = slots.get((budget, holder, unit, slot), 0) - amount
    if entries:
        await defer_many(session, _ADD_ENTRY, entries)
    if slots:
        await add_to_slots(session, slots)
    return len(ordered)
