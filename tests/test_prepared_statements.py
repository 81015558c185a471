"""Statements built once and run on the driver's connection (server.storage.prepared) store and read exactly what
the ORM stores and reads, in the caller's transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, func, insert, literal, select, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from server.ledger import _ADD_TO_SLOT, LedgerBucket, LedgerEntry, LedgerWindowTotal
from server.storage.database import Database
from server.storage.prepared import Prepared, defer, defer_many, run, run_many

pytestmark = pytest.mark.anyio

ENTRIES = LedgerEntry.__table__  # type: ignore[attr-defined]
INSERT_ENTRY = Prepared(insert(ENTRIES))
ENTRY_BY_AUDIT = Prepared(
    select(ENTRIES.c.amount, ENTRIES.c.at, literal("fixed").label("marker")).where(
        ENTRIES.c.audit_id == bindparam("audit_id")
    )
)
TOTAL = Prepared(select(func.coalesce(func.sum(ENTRIES.c.amount), 0)).where(ENTRIES.c.budget == bindparam("budget")))
DOUBLE = Prepared(update(ENTRIES).where(ENTRIES.c.budget == bindparam("k_budget")).values(amount=ENTRIES.c.amount * 2))


def _entry(audit_id: str, amount: int, at: datetime) -> dict[str, Any]:
    return {
        "budget": "daily",
        "holder": "agent",
        "unit": "EUR",
        "period": "2026-12-02",
        "amount": amount,
        "at": at,
        "tool": "refund_create",
        "audit_id": audit_id,
    }


async def test_a_row_written_by_a_prepared_statement_reads_the_same_through_the_orm(db: Database) -> None:
    at = datetime(2026, 12, 2, 9, 30, 0, 123456, tzinfo=UTC)

    async def write(session: Any) -> None:
        await run(session, INSERT_ENTRY, _entry("aud_prepared", 1250, at))
        session.add(LedgerEntry(**_entry("aud_orm", 1250, at)))

    await db.run_in_transaction(write)
    async with db.session() as session:
        rows = (await session.exec(select(LedgerEntry).order_by(col(LedgerEntry.id)))).all()  # type: ignore[call-overload]
        stored = (await session.connection()).exec_driver_sql("SELECT at FROM ledger_entries ORDER BY id")
        raw = [value for (value,) in (await stored).all()]
    prepared, orm = rows[0][0], rows[1][0]
    assert prepared.at == orm.at == at and prepared.at.tzinfo is not None
    assert raw[0] == raw[1]  # the same stored form (SQLite: the same text, microseconds included)


async def test_a_prepared_select_applies_result_types_and_names_its_columns(db: Database) -> None:
    at = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)

    async def work(session: Any) -> tuple[Any, int, int]:
        await run_many(session, INSERT_ENTRY, [_entry("aud_a", 100, at), _entry("aud_b", 250, at + timedelta(1))])
        found = (await run(session, ENTRY_BY_AUDIT, {"audit_id": "aud_b"})).first()
        changed = (await run(session, DOUBLE, {"k_budget": "daily"})).rowcount
        total = int((await run(session, TOTAL, {"budget": "daily"})).scalar())
        return found, changed, total

    found, changed, total = await db.run_in_transaction(work)
    assert found is not None
    assert (found.amount, found.at, found.marker) == (250, at + timedelta(1), "fixed")
    assert found.at.tzinfo is not None
    assert changed == 2
    assert total == 700


async def test_prepared_statements_roll_back_with_the_transaction_they_ran_in(db: Database) -> None:
    async def fail(session: Any) -> None:
        await run(session, INSERT_ENTRY, _entry("aud_gone", 100, datetime.now(UTC)))
        raise RuntimeError("the call failed after its write")

    with pytest.raises(RuntimeError):
        await db.run_in_transaction(fail)

    async def total(session: Any) -> int:
        return int((await run(session, TOTAL, {"budget": "daily"})).scalar())

    assert await db.run_in_transaction(total) == 0


async def test_a_prepared_statement_missing_a_parameter_is_refused_before_it_runs(db: Database) -> None:
    async def work(session: Any) -> None:
        await run(session, ENTRY_BY_AUDIT, {})

    with pytest.raises(ValueError, match="without the parameters audit_id"):
        await db.run_in_transaction(work)


async def test_a_queued_write_is_seen_by_the_next_read_and_commits_with_the_transaction(db: Database) -> None:
    async def work(session: Any) -> int:
        await defer_many(session, INSERT_ENTRY, [_entry("aud_q1", 100, datetime.now(UTC))])
        await defer(session, DOUBLE, {"k_budget": "daily"}, expect=1)
        return int((await run(session, TOTAL, {"budget": "daily"})).scalar())  # sends the queue first

    assert await db.run_in_transaction(work) == 200

    async def queued_only(session: Any) -> None:  # nothing read afterwards: the queue goes before the commit
        await defer(session, DOUBLE, {"k_budget": "daily"}, expect=1)

    await db.run_in_transaction(queued_only)

    async def total(session: Any) -> int:
        return int((await run(session, TOTAL, {"budget": "daily"})).scalar())

    assert await db.run_in_transaction(total) == 400


class Mismatched(RuntimeError):
    pass


async def test_a_queued_write_that_changes_another_number_of_rows_fails_the_transaction(db: Database) -> None:
    async def work(session: Any) -> None:
        await run(session, INSERT_ENTRY, _entry("aud_kept_only_if_all_is", 100, datetime.now(UTC)))
        await defer(
            session, DOUBLE, {"k_budget": "no such budget"}, expect=1, mismatch=lambda n: Mismatched(f"changed {n}")
        )

    with pytest.raises(Mismatched, match="changed 0"):
        await db.run_in_transaction(work)

    async def total(session: Any) -> int:
        return int((await run(session, TOTAL, {"budget": "daily"})).scalar())

    assert await db.run_in_transaction(total) == 0


async def test_a_queued_write_is_sent_by_whatever_commits_its_transaction(db: Database) -> None:
    async with AsyncSession(db.engine, expire_on_commit=False) as session, session.begin():
        await defer_many(session, INSERT_ENTRY, [_entry("aud_plain_commit", 150, datetime.now(UTC))])

    async def total(session: Any) -> int:
        return int((await run(session, TOTAL, {"budget": "daily"})).scalar())

    assert await db.run_in_transaction(total) == 150


# --- queued writes merged into one statement on PostgreSQL (server.storage.merged_writes.groups) ---------------------

BUCKETS = LedgerBucket.__table__  # type: ignore[attr-defined]
SLOTS = LedgerWindowTotal.__table__  # type: ignore[attr-defined]
INSERT_BUCKET = Prepared(insert(BUCKETS))
ADD_TO_BUCKET = Prepared(
    update(BUCKETS).where(BUCKETS.c.holder == bindparam("k_holder")).values(spent=BUCKETS.c.spent + bindparam("k_x"))
)
SLOT_TOTAL = Prepared(select(func.coalesce(func.sum(SLOTS.c.spent), 0)))


def _queued(sql_of: Prepared, *, disjoint: str | None = None) -> Any:
    from server.storage.merged_writes import Write

    return Write("", {}, False, None, None, sql_of.merge, disjoint)


def test_a_queued_write_that_names_a_table_an_earlier_one_wrote_goes_in_a_statement_after_it() -> None:
    from server.storage.merged_writes import groups

    insert_entry, double = _queued(INSERT_ENTRY), _queued(DOUBLE)
    insert_bucket = _queued(INSERT_BUCKET)
    assert groups([insert_entry, insert_bucket]) == [[insert_entry, insert_bucket]]  # two tables: one statement
    assert groups([insert_entry, double]) == [[insert_entry], [double]]  # DOUBLE reads what the insert wrote
    assert groups([double, insert_entry]) == [[double], [insert_entry]]  # two writes to one table
    first, second = _queued(ADD_TO_BUCKET, disjoint="buckets"), _queued(ADD_TO_BUCKET, disjoint="buckets")
    assert groups([first, second]) == [[first, second]]  # promised distinct rows
    assert groups([first, _queued(ADD_TO_BUCKET)]) == [[first], [_queued(ADD_TO_BUCKET)]]


def _bucket(holder: str) -> dict[str, Any]:
    at = datetime.now(UTC)
    return {"budget": "daily", "holder": holder, "unit": "EUR", "period": "2026-12-02", "spent": 0, "updated_at": at}


async def test_queued_writes_to_several_tables_each_change_what_they_must_or_the_whole_transaction_fails(
    db: Database,
) -> None:
    async def setup(session: Any) -> None:
        await run_many(session, INSERT_BUCKET, [_bucket("a"), _bucket("b")])

    await db.run_in_transaction(setup)

    async def work(session: Any, holders: tuple[str, ...]) -> None:
        await defer_many(session, INSERT_ENTRY, [_entry(f"aud_m{n}", 10, datetime.now(UTC)) for n in range(3)])
        for holder in holders:
            await defer(
                session,
                ADD_TO_BUCKET,
                {"k_holder": holder, "k_x": 5},
                expect=1,
                mismatch=lambda n: Mismatched(f"changed {n}"),
                disjoint="buckets",
            )

    async def totals(session: Any) -> tuple[int, int]:
        entries = int((await run(session, TOTAL, {"budget": "daily"})).scalar())
        spent = (await run(session, Prepared(select(func.sum(BUCKETS.c.spent))))).scalar()
        return entries, int(spent)

    await db.run_in_transaction(lambda session: work(session, ("a", "b")))
    assert await db.run_in_transaction(totals) == (30, 10)
    with pytest.raises(Mismatched, match="changed 0"):  # the last write of the statement finds no row
        await db.run_in_transaction(lambda session: work(session, ("a", "nobody")))
    assert await db.run_in_transaction(totals) == (30, 10)  # nothing of that transaction was kept


async def test_queued_upserts_add_up_whether_their_keys_are_distinct_or_repeat(db: Database) -> None:
    upsert = _ADD_TO_SLOT["sqlite" if db.is_sqlite else "postgresql"]

    def slot(name: str, spent: int) -> dict[str, Any]:
        return {"budget": "rolling", "holder": "agent", "unit": "EUR", "slot": name, "spent": spent}

    async def work(session: Any) -> int:
        await defer_many(session, upsert, [slot("d1", 1), slot("h1", 2)], distinct=True)
        await defer_many(session, upsert, [slot("d1", 10), slot("d1", 20)])  # one key twice: not one INSERT
        return int((await run(session, SLOT_TOTAL)).scalar())

    assert await db.run_in_transaction(work) == 33


def test_a_stored_utc_time_reads_back_as_the_general_result_processor_reads_it() -> None:
    from sqlalchemy.dialects import sqlite

    from server.storage.prepared import forms
    from server.storage.types import UTCDateTime

    dialect = sqlite.dialect()
    general = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert general is not None
    quick = forms._sqlite_utc_result(general)
    for stored in (
        "2026-12-04 10:00:00.123456",  # what UTCDateTime writes: the shortcut
        "2026-12-04 10:00:00.000000",
        "2026-12-04 10:00:00",  # another length: the general processor
        "2026-12-04T10:00:00.12345+",  # 26 characters that are not a time
        "2026-13-04 10:00:00.123456",  # 26 characters, no such month
    ):
        try:
            expected: object = general(stored)
        except ValueError as exc:
            expected = type(exc)
        try:
            got: object = quick(stored)
        except ValueError as exc:
            got = type(exc)
        assert got == expected, stored
        if isinstance(got, datetime):
            assert got.tzinfo is UTC
    assert quick(None) == general(None)


def test_a_statements_values_are_bound_in_its_order_through_its_processors_whichever_way_they_are_gathered() -> None:
    from sqlalchemy.dialects import sqlite

    from server.storage.prepared import forms

    dialect = sqlite.dialect()
    at = datetime(2026, 12, 4, 10, 0, 0, 123456, tzinfo=UTC)
    for statement, params in (
        (INSERT_ENTRY, _entry("a1", 5, at)),
        (ENTRY_BY_AUDIT, {"audit_id": "a1"}),
        (DOUBLE, {"k_budget": "daily"}),
    ):
        form = statement.form(dialect, forms._insert_keys(statement, params))
        assert form.ordered is not None  # the shortcut applies to these
        assert forms._values(form, params) == forms._values_in_steps(form, params)
        if params:
            missing = dict(params)
            missing.pop(next(iter(missing)))
            with pytest.raises((ValueError, KeyError)):
                forms._values(form, missing)
