"""The ledger: running totals that cumulative caps read and reserve, in the same database as the effect.

DESIGN.md section 5 and the policy issue, item 4: a reservation commits or rolls back together with the effect and
its audit record (one ``Database.run_in_transaction``), and nothing shared lives in process memory, so several
replicas can share PostgreSQL.

- A calendar-window total is one ``ledger_buckets`` row per (budget, holder, unit, period). :func:`totals` creates
  it if missing and reads it ``FOR UPDATE`` (PostgreSQL row lock; on SQLite the whole transaction already holds the
  write lock from ``BEGIN IMMEDIATE``), so the decision sees the exact total; :func:`reserve` then adds with a
  conditional ``UPDATE ... SET spent = spent + :x WHERE spent + :x <= :cap``, which refuses to overspend even if
  a caller forgot to lock (a second line of defence; it failing is an internal error, never an overspend).
- A rolling-window total (``rolling 30 days``) is the sum of ``ledger_entries`` after the window's start, read while
  holding the lock on the budget's ``rolling`` anchor row, so concurrent spenders of one holder take turns.

Every reservation also appends a ``ledger_entries`` row naming the audit record that spent it (lineage).
Locks are taken in one global order (the facts loader's rows, then buckets sorted by key, then the audit head),
so concurrent calls cannot deadlock on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import BigInteger, Column, ColumnElement, Index, UniqueConstraint, and_, func, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.money import Money
from scopes.policy.limits import COUNT
from scopes.policy.results import LedgerKey, Spend
from server.storage.types import UTCDateTime


class LedgerConflict(RuntimeError):
    """A reservation did not fit although the decision said it would: the transaction is rolled back."""


class LedgerBucket(SQLModel, table=True):
    __tablename__ = "ledger_buckets"
    __table_args__ = (UniqueConstraint("budget", "holder", "unit", "period", name="uq_ledger_bucket"),)

    id: int | None = Field(default=None, primary_key=True)
    budget: str = Field(max_length=64)
    holder: str = Field(max_length=300, description="whose total: a principal key, a customer id, ...")
    unit: str = Field(max_length=8, description="a currency (amounts in minor units) or 'count'")
    period: str = Field(max_length=16, description="the calendar day in the policy's time zone, or 'rolling'")
    spent: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class LedgerEntry(SQLModel, table=True):
    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_holder_at", "budget", "holder", "unit", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    budget: str = Field(max_length=64)
    holder: str = Field(max_length=300)
    unit: str = Field(max_length=8)
    period: str = Field(max_length=16)
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    tool: str = Field(max_length=100)
    audit_id: str = Field(index=True, max_length=40)


def _bucket(key: LedgerKey) -> ColumnElement[bool]:
    return and_(
        col(LedgerBucket.budget) == key.budget,
        col(LedgerBucket.holder) == key.key,
        col(LedgerBucket.unit) == key.unit,
        col(LedgerBucket.period) == key.window,
    )


def _as_usage(amount: int, unit: str) -> int | Money:
    return amount if unit == COUNT else Money.from_minor(amount, unit)


async def totals(
    session: AsyncSession, needs: Sequence[LedgerKey], *, at: datetime, lock: bool = True
) -> dict[str, int | Money]:
    """The current total of each needed budget, keyed by budget id; with ``lock``, held until the transaction ends.

    Without ``lock`` (``mandate explain``) nothing is written or locked and a missing total reads as zero.
    """
    usage: dict[str, int | Money] = {}
    for key in sorted(needs, key=lambda k: (k.budget, k.key, k.unit, k.window)):
        query = select(LedgerBucket.spent).where(_bucket(key))
        if lock:
            query = query.with_for_update()
        found = (await session.exec(query)).first()
        if found is None and lock:  # the first spend of this holder in this window: create the row, then lock it
            await _ensure_bucket(session, key, at)
            found = (await session.exec(query)).one()
        spent = found or 0
        if key.since is not None:
            window = select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                col(LedgerEntry.budget) == key.budget,
                col(LedgerEntry.holder) == key.key,
                col(LedgerEntry.unit) == key.unit,
                col(LedgerEntry.at) > key.since,
            )
            spent = int((await session.exec(window)).one())
        usage[key.budget] = _as_usage(spent, key.unit)
    return usage


async def reserve(session: AsyncSession, spends: Sequence[Spend], *, at: datetime, audit_id: str, tool: str) -> None:
    """Add each spend to its total, in the caller's transaction; a capped spend that no longer fits raises."""
    for spend in sorted(spends, key=lambda s: (s.ledger.budget, s.ledger.key, s.ledger.unit, s.ledger.window)):
        key = spend.ledger
        statement = (
            update(LedgerBucket).where(_bucket(key)).values(spent=col(LedgerBucket.spent) + spend.amount, updated_at=at)
        )
        if spend.cap is not None and key.since is None:
            statement = statement.where(col(LedgerBucket.spent) + spend.amount <= spend.cap)
        result = await session.exec(statement)
        if result.rowcount != 1:
            raise LedgerConflict(f"budget {key.budget}: {spend.amount} {key.unit} does not fit under {spend.cap}")
        session.add(
            LedgerEntry(
                budget=key.budget,
                holder=key.key,
                unit=key.unit,
                period=key.window,
                amount=spend.amount,
                at=at,
                tool=tool,
                audit_id=audit_id,
            )
        )
    if spends:
        await session.flush()


async def _ensure_bucket(session: AsyncSession, key: LedgerKey, at: datetime) -> None:
    """Create the bucket row if it is missing, without failing when a concurrent transaction creates it too."""
    values = {"budget": key.budget, "holder": key.key, "unit": key.unit, "period": key.window, "spent": 0}
    columns = ["budget", "holder", "unit", "period"]
    bind = session.bind
    if bind is not None and bind.dialect.name == "postgresql":
        pg = pg_insert(LedgerBucket).values(**values, updated_at=at).on_conflict_do_nothing(index_elements=columns)
        await session.exec(pg)
    else:
        lite = (
            sqlite_insert(LedgerBucket).values(**values, updated_at=at).on_conflict_do_nothing(index_elements=columns)
        )
        await session.exec(lite)
