"""The ledger: running totals that cumulative caps read and reserve, in the same database as the effect.

DESIGN.md section 5 and the policy issue, item 4: a reservation commits or rolls back together with the effect and
its audit record (one ``Database.run_in_transaction``), and nothing shared lives in process memory, so several
replicas can share PostgreSQL.

- A calendar-window total is one ``ledger_buckets`` row per (budget, holder, unit, period). :func:`totals` creates
  it if missing and reads it ``FOR UPDATE`` (PostgreSQL row lock; on SQLite the whole transaction already holds the
  write lock from ``BEGIN IMMEDIATE``), so the decision sees the exact total; :func:`reserve` then adds with a
  conditional ``UPDATE ... SET spent = spent + :x WHERE spent + :x <= :cap``, which refuses to overspend even if
  a caller forgot to lock (a second line of defence; it failing is an internal error, never an overspend).
- A rolling-window total (``rolling 30 days``) is, exactly as before, the sum of the amounts of every entry with
  ``at > since`` (the window's start), read while holding the lock on the budget's ``rolling`` anchor row, so
  concurrent spenders of one holder take turns. It is not summed entry by entry, so its cost does not grow with
  history: every rolling spend also adds to two ``ledger_window_totals`` rows, the UTC day and the UTC hour its
  entry's ``at`` falls in (one conditional upsert, in the same transaction). The window's total is then the whole
  UTC days after the day of ``since``, plus the whole hours of that day after the hour of ``since``, plus the
  entries of that one hour after ``since``: at most 30 + 23 sub-total rows and one hour of entries, whatever the
  history. Every entry is counted in exactly one of the three parts (by its own ``at``), so the total is the same
  number the per-entry sum gave, to the microsecond; see docs/performance.md, "Rolling windows".

Every reservation also appends a ``ledger_entries`` row naming the audit record that spent it (lineage).
Locks are taken in one global order (the facts loader's rows, then buckets sorted by key, then the audit head),
so concurrent calls cannot deadlock on them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    UniqueConstraint,
    and_,
    bindparam,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.selectable import ScalarSelect
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.money import Money
from scopes.policy.limits import COUNT
from scopes.policy.results import LedgerKey, Spend
from server.storage.prepared import Prepared, defer, defer_many, run, run_all
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


class LedgerWindowTotal(SQLModel, table=True):
    """What one holder spent from one rolling budget in one UTC day (``slot`` ``d2026-12-01``) or one UTC hour
    (``h2026-12-01T13``), counted by the entries' ``at``: the sub-totals a rolling window's total is read from."""

    __tablename__ = "ledger_window_totals"
    __table_args__ = (UniqueConstraint("budget", "holder", "unit", "slot", name="uq_ledger_window_total"),)

    id: int | None = Field(default=None, primary_key=True)
    budget: str = Field(max_length=64)
    holder: str = Field(max_length=300)
    unit: str = Field(max_length=8)
    slot: str = Field(max_length=16)
    spent: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


BUCKETS = LedgerBucket.__table__  # type: ignore[attr-defined]
ENTRIES = LedgerEntry.__table__  # type: ignore[attr-defined]
WINDOW_TOTALS = LedgerWindowTotal.__table__  # type: ignore[attr-defined]

# Core statements built once (the call path's hot loop); the bound names are prefixed because an UPDATE reserves
# its columns' names for its SET clause.
_MATCH = and_(
    BUCKETS.c.budget == bindparam("k_budget"),
    BUCKETS.c.holder == bindparam("k_holder"),
    BUCKETS.c.unit == bindparam("k_unit"),
    BUCKETS.c.period == bindparam("k_period"),
)
_SPENT = select(BUCKETS.c.spent).where(_MATCH)
_SPENT_LOCKED = _SPENT.with_for_update()
_ADD = (
    update(BUCKETS)
    .where(_MATCH)
    .values(spent=BUCKETS.c.spent + bindparam("k_amount"), updated_at=bindparam("k_at", type_=UTCDateTime()))
)
_ADD_CAPPED = _ADD.where(BUCKETS.c.spent + bindparam("k_amount") <= bindparam("k_cap"))
_SPENT_NOW = Prepared(_SPENT)
_SPENT_NOW_LOCKED = Prepared(_SPENT_LOCKED)
_ADD_NOW = Prepared(_ADD)
_ADD_CAPPED_NOW = Prepared(_ADD_CAPPED)


def _window_total(suffix: str = "") -> Any:
    """A rolling window's total, its parameters named ``k{suffix}_...`` (:func:`window_params`).

    The whole UTC days after the boundary day ("d..." slots sort before "e"), the whole hours of the boundary day
    after the boundary hour, and the boundary hour's entries after the window's start: each a range of a unique
    index, whatever the history."""

    def name(part: str) -> str:
        return f"k{suffix}_{part}"

    holder = and_(
        WINDOW_TOTALS.c.budget == bindparam(name("budget")),
        WINDOW_TOTALS.c.holder == bindparam(name("holder")),
        WINDOW_TOTALS.c.unit == bindparam(name("unit")),
    )

    def slot_sum(low: str, high: object) -> ScalarSelect[int]:
        return (
            select(func.coalesce(func.sum(WINDOW_TOTALS.c.spent), 0))
            .where(holder, WINDOW_TOTALS.c.slot > bindparam(low), WINDOW_TOTALS.c.slot < high)
            .scalar_subquery()
        )

    boundary_entries = (
        select(func.coalesce(func.sum(ENTRIES.c.amount), 0))
        .where(
            ENTRIES.c.budget == bindparam(name("budget")),
            ENTRIES.c.holder == bindparam(name("holder")),
            ENTRIES.c.unit == bindparam(name("unit")),
            ENTRIES.c.at > bindparam(name("since"), type_=UTCDateTime()),
            ENTRIES.c.at < bindparam(name("hour_end"), type_=UTCDateTime()),
        )
        .scalar_subquery()
    )
    return slot_sum(name("day"), literal("e")) + slot_sum(name("hour"), bindparam(name("day_end"))) + boundary_entries


WINDOW_TOTAL = select(_window_total())
_WINDOW_TOTAL_NOW = Prepared(WINDOW_TOTAL)

_ADD_ENTRY = Prepared(insert(ENTRIES))
_SLOT_COLUMNS = ["budget", "holder", "unit", "slot"]


def slots_of(at: datetime) -> tuple[str, str]:
    """The UTC day and UTC hour sub-total slots an entry made at ``at`` counts in."""
    utc = at.astimezone(UTC)
    return _hour_slots(utc.year, utc.month, utc.day, utc.hour)


@functools.lru_cache(maxsize=256)
def _hour_slots(year: int, month: int, day: int, hour: int) -> tuple[str, str]:
    """``("d2026-12-01", "h2026-12-01T13")``: the same text as ``strftime`` gives, formatted once per UTC hour."""
    date = f"{year}-{month:02d}-{day:02d}"
    return f"d{date}", f"h{date}T{hour:02d}"


def window_params(key: LedgerKey, since: datetime, suffix: str = "") -> dict[str, object]:
    day, hour = slots_of(since)
    hour_start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    k = f"k{suffix}_"
    return {
        k + "budget": key.budget,
        k + "holder": key.key,
        k + "unit": key.unit,
        k + "since": since,
        k + "day": day,
        k + "hour": hour,
        k + "day_end": f"h{day[1:]}U",  # after every hour slot of that day ("T00".."T23")
        k + "hour_end": hour_start + timedelta(hours=1),
    }


def _bucket(key: LedgerKey, suffix: str = "") -> dict[str, object]:
    k = f"k{suffix}_"
    return {k + "budget": key.budget, k + "holder": key.key, k + "unit": key.unit, k + "period": key.window}


_AT_ONCE: dict[tuple[bool, ...], Prepared] = {}
"""SQLite: the statement reading every total a call needs at once, by the needs' shape (which have a window)."""


def _all_at_once(shape: tuple[bool, ...]) -> Prepared:
    """One ``SELECT`` of every needed bucket's total and every rolling window's sum: ``b0, w0, b1, ...``.

    For SQLite, where the transaction already holds the database's write lock (``BEGIN IMMEDIATE``), so reading
    them in one statement sees exactly what reading them one by one would; a missing bucket reads as ``NULL``."""
    prepared = _AT_ONCE.get(shape)
    if prepared is None:
        columns: list[Any] = []
        for index, windowed in enumerate(shape):
            k = f"k{index}_"
            match = and_(
                BUCKETS.c.budget == bindparam(k + "budget"),
                BUCKETS.c.holder == bindparam(k + "holder"),
                BUCKETS.c.unit == bindparam(k + "unit"),
                BUCKETS.c.period == bindparam(k + "period"),
            )
            columns.append(select(BUCKETS.c.spent).where(match).scalar_subquery().label(f"b{index}"))
            if windowed:
                columns.append(_window_total(str(index)).label(f"w{index}"))
        prepared = Prepared(select(*columns))
        if len(_AT_ONCE) < 64:  # a policy names a handful of shapes; never let the cache grow without bound
            _AT_ONCE[shape] = prepared
    return prepared


def _as_usage(amount: int, unit: str) -> int | Money:
    return amount if unit == COUNT else Money.from_minor(amount, unit)


async def totals(
    session: AsyncSession, needs: Sequence[LedgerKey], *, at: datetime, lock: bool = True
) -> dict[str, int | Money]:
    """The current total of each needed budget, keyed by budget id; with ``lock``, held until the transaction ends.

    Without ``lock`` (``mandate explain``) nothing is written or locked and a missing total reads as zero.

    Every total is read in one round trip on PostgreSQL (:func:`server.storage.prepared.running.run_all`): each
    budget's row locked in the global order, and a rolling window's sum right after its anchor's lock, in a statement
    of its own, so that it sees every spend committed while the lock was awaited. A budget met for the first time in
    its window has no row to lock yet: it is created, and everything is read again one statement at a time.
    """
    ordered = sorted(needs, key=lambda k: (k.budget, k.key, k.unit, k.window))
    if session.bind is not None and session.bind.dialect.name == "sqlite":
        return await _totals_at_once(session, ordered, at=at, lock=lock)
    query = _SPENT_NOW_LOCKED if lock else _SPENT_NOW
    statements: list[tuple[Prepared, dict[str, Any]]] = []
    for key in ordered:
        statements.append((query, _bucket(key)))
        if key.since is not None:
            statements.append((_WINDOW_TOTAL_NOW, window_params(key, key.since)))
    results = iter(await run_all(session, statements))
    usage: dict[str, int | Money] = {}
    for key in ordered:
        found = next(results).first()
        window = next(results).scalar() if key.since is not None else None
        if found is None and lock:
            return await _totals_creating(session, ordered, at=at)
        spent = int(window) if window is not None else int(found[0]) if found is not None else 0
        usage[key.budget] = _as_usage(spent, key.unit)
    return usage


async def _totals_at_once(
    session: AsyncSession, ordered: Sequence[LedgerKey], *, at: datetime, lock: bool
) -> dict[str, int | Money]:
    """:func:`totals` on SQLite: every total in one statement (:func:`_all_at_once`)."""
    params: dict[str, object] = {}
    for index, key in enumerate(ordered):
        params.update(_bucket(key, str(index)))
        if key.since is not None:
            params.update(window_params(key, key.since, str(index)))
    row = (await run(session, _all_at_once(tuple(key.since is not None for key in ordered)), params)).first()
    if row is None:  # a SELECT without FROM always returns its one row
        raise LedgerConflict("the ledger's totals could not be read")
    values = iter(row)
    usage: dict[str, int | Money] = {}
    for key in ordered:
        found = next(values)
        window = next(values) if key.since is not None else None
        if found is None and lock:
            return await _totals_creating(session, ordered, at=at)
        spent = int(window) if window is not None else int(found) if found is not None else 0
        usage[key.budget] = _as_usage(spent, key.unit)
    return usage


async def _totals_creating(
    session: AsyncSession, ordered: Sequence[LedgerKey], *, at: datetime
) -> dict[str, int | Money]:
    """:func:`totals` with ``lock`` when a budget's row is missing: create it, lock it, then read its window."""
    usage: dict[str, int | Money] = {}
    for key in ordered:
        params = _bucket(key)
        found = (await run(session, _SPENT_NOW_LOCKED, params)).first()
        if found is None:  # the first spend of this holder in this window: create the row, then lock it
            await _ensure_bucket(session, key, at)
            found = (await run(session, _SPENT_NOW_LOCKED, params)).first()
            if found is None:
                raise LedgerConflict(f"budget {key.budget}: its total could not be created")
        spent = int(found[0])
        if key.since is not None:
            spent = int((await run(session, _WINDOW_TOTAL_NOW, window_params(key, key.since))).scalar())
        usage[key.budget] = _as_usage(spent, key.unit)
    return usage


async def reserve(session: AsyncSession, spends: Sequence[Spend], *, at: datetime, audit_id: str, tool: str) -> None:
    """Add each spend to its total, in the caller's transaction; a capped spend that no longer fits raises."""
    if not spends:
        return
    entries: list[dict[str, object]] = []
    slots: dict[tuple[str, str, str, str], int] = {}
    ordered = sorted(spends, key=lambda s: (s.ledger.budget, s.ledger.key, s.ledger.unit, s.ledger.window))
    keys = {(s.ledger.budget, s.ledger.key, s.ledger.unit, s.ledger.window) for s in ordered}
    # distinct buckets: their updates change distinct rows, so they may go in one statement (merged_writes.groups)
    disjoint = "ledger_buckets" if len(keys) == len(ordered) else None
    for spend in ordered:
        key = spend.ledger
        params = _bucket(key)
        params["k_amount"], params["k_at"] = spend.amount, at
        if spend.cap is not None and key.since is None:
            statement, params["k_cap"] = _ADD_CAPPED_NOW, spend.cap
        else:
            statement = _ADD_NOW
        # sent with the call's other writes (one round trip on PostgreSQL); a spend that no longer fits fails it
        await defer(session, statement, params, expect=1, mismatch=_conflict(spend), disjoint=disjoint)
        entries.append(
            {
                "budget": key.budget,
                "holder": key.key,
                "unit": key.unit,
                "period": key.window,
                "amount": spend.amount,
                "at": at,
                "tool": tool,
                "audit_id": audit_id,
            }
        )
        if key.since is not None:
            for slot in slots_of(at):
                slot_key = (key.budget, key.key, key.unit, slot)
                slots[slot_key] = slots.get(slot_key, 0) + spend.amount
    await defer_many(session, _ADD_ENTRY, entries)
    if slots:
        await add_to_slots(session, slots)


def _conflict(spend: Spend) -> Callable[[int], Exception]:
    def mismatch(_changed: int) -> Exception:  # the message is only worded when it is raised
        key = spend.ledger
        return LedgerConflict(f"budget {key.budget}: {spend.amount} {key.unit} does not fit under {spend.cap}")

    return mismatch


def _slot_upsert(dialect_insert: Any) -> Any:
    statement = dialect_insert(WINDOW_TOTALS)
    return statement.on_conflict_do_update(
        index_elements=_SLOT_COLUMNS, set_={"spent": WINDOW_TOTALS.c.spent + statement.excluded.spent}
    )


_ADD_TO_SLOT = {"postgresql": Prepared(_slot_upsert(pg_insert)), "sqlite": Prepared(_slot_upsert(sqlite_insert))}


async def add_to_slots(session: AsyncSession, slots: dict[tuple[str, str, str, str], int]) -> None:
    """Add to the rolling sub-totals (a negative amount takes away), one upsert per slot in one round trip (under
    the decision's anchor lock)."""
    rows = [dict(zip(_SLOT_COLUMNS, slot_key, strict=True), spent=amount) for slot_key, amount in slots.items()]
    dialect = "sqlite" if session.bind is not None and session.bind.dialect.name == "sqlite" else "postgresql"
    await defer_many(session, _ADD_TO_SLOT[dialect], rows, distinct=True)  # one row per slot: keys distinct


async def backfill_window_totals(connection: AsyncConnection) -> int:
    """Build the rolling sub-totals from the entries of a database that predates them; returns the rows written.

    Every rolling spend writes its sub-totals in its own transaction, so an empty sub-total table beside rolling
    entries can only mean a database written before the table existed; without this, its windows would read low.
    Run by ``create_schema`` (under its lock on PostgreSQL), so it happens once, before any call.
    """
    if (await connection.execute(select(WINDOW_TOTALS.c.id).limit(1))).first() is not None:
        return 0
    rolling = select(ENTRIES.c.budget, ENTRIES.c.holder, ENTRIES.c.unit, ENTRIES.c.at, ENTRIES.c.amount).where(
        ENTRIES.c.period == "rolling"
    )
    slots: dict[tuple[str, str, str, str], int] = {}
    for budget, holder, unit, at, amount in await connection.execute(rolling):
        for slot in slots_of(at):
            slots[(budget, holder, unit, slot)] = slots.get((budget, holder, unit, slot), 0) + int(amount)
    rows = [dict(zip(_SLOT_COLUMNS, slot_key, strict=True), spent=amount) for slot_key, amount in slots.items()]
    if rows:
        await connection.execute(insert(WINDOW_TOTALS), rows)
    return len(rows)


_BUCKET_KEY = ["budget", "holder", "unit", "period"]
_CREATE_BUCKET = {
    "postgresql": Prepared(pg_insert(BUCKETS).on_conflict_do_nothing(index_elements=_BUCKET_KEY)),
    "sqlite": Prepared(sqlite_insert(BUCKETS).on_conflict_do_nothing(index_elements=_BUCKET_KEY)),
}


async def _ensure_bucket(session: AsyncSession, key: LedgerKey, at: datetime) -> None:
    """Create the bucket row if it is missing, without failing when a concurrent transaction creates it too."""
    values = {"budget": key.budget, "holder": key.key, "unit": key.unit, "period": key.window, "spent": 0}
    dialect = "sqlite" if session.bind is not None and session.bind.dialect.name == "sqlite" else "postgresql"
    await run(session, _CREATE_BUCKET[dialect], {**values, "updated_at": at})
