"""The rolling windows' sub-totals rebuilt from the ledger's entries, which a released reservation had left behind

Before this revision, giving back a reservation whose effect definitely did not happen (an external refund the
provider refused, or one the reconciler found was never made: ``server.effects.budget``) took the amount off its
budget's total and appended a negative ledger entry dated like the reservation, but left it in the UTC day and hour
sub-totals (``ledger_window_totals``) that a rolling window is read from, so a customer's 30-day window counted it
until it aged out: refunds were refused, or sent for approval, for room no money had taken. The entries were always
right, so the sub-totals are rebuilt from them, exactly as ``server.ledger.backfill_window_totals`` builds them for
a database that predates the table: every ``rolling`` entry counts in its UTC day (``d2026-12-07``) and its UTC hour
(``h2026-12-07T15``). The rebuild reads every rolling entry once, streamed; nothing else changes.

On PostgreSQL both tables are locked against writes (``SHARE ROW EXCLUSIVE``: reads go on) for the rest of the
upgrade's transaction, so a spend committed by a replica still serving meanwhile cannot fall between the read of
the entries and the rewrite of the sub-totals; on SQLite the upgrade's transaction holds the database's write lock.
A release made by a replica still on the old version after the upgrade leaves its amount in the sub-totals, as
before, until it ages out: upgrade the replicas promptly (docs/database.md).

Revision ID: 0003
Revises: 0002
Created: 2026-12-07
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BATCH = 5000


def _utc(value: object) -> datetime:
    """An entry's ``at`` as stored: aware on PostgreSQL, UTC text (``2026-12-07 15:20:30.250000``) on SQLite."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def upgrade() -> None:
    bind = op.get_bind()
    entries = sa.table(
        "ledger_entries",
        sa.column("budget"),
        sa.column("holder"),
        sa.column("unit"),
        sa.column("period"),
        sa.column("at"),
        sa.column("amount"),
    )
    totals = sa.table(
        "ledger_window_totals",
        sa.column("budget"),
        sa.column("holder"),
        sa.column("unit"),
        sa.column("slot"),
        sa.column("spent"),
    )
    if bind.dialect.name == "postgresql":
        op.execute("LOCK TABLE ledger_entries, ledger_window_totals IN SHARE ROW EXCLUSIVE MODE")
    slots: dict[tuple[str, str, str, str], int] = {}
    rolling = sa.select(entries.c.budget, entries.c.holder, entries.c.unit, entries.c.at, entries.c.amount).where(
        entries.c.period == "rolling"
    )
    for budget, holder, unit, at, amount in bind.execute(
        rolling.execution_options(stream_results=True, yield_per=BATCH)
    ):
        utc = _utc(at)
        day = f"{utc.year}-{utc.month:02d}-{utc.day:02d}"
        for slot in (f"d{day}", f"h{day}T{utc.hour:02d}"):
            slots[(budget, holder, unit, slot)] = slots.get((budget, holder, unit, slot), 0) + int(amount)
    bind.execute(sa.delete(totals))
    rows = [
        {"budget": budget, "holder": holder, "unit": unit, "slot": slot, "spent": spent}
        for (budget, holder, unit, slot), spent in slots.items()
    ]
    for start in range(0, len(rows), BATCH):
        bind.execute(sa.insert(totals), rows[start : start + BATCH])


def downgrade() -> None:
    """Nothing to undo: the rebuilt sub-totals are what revision 0002's code should have kept."""
