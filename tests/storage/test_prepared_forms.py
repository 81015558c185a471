"""The prepared statements' shortcuts (server.storage.prepared) bind and return exactly what the general steps do:
the values in the SQL's order through the same processors, the same error for a missing parameter, the same aware
UTC datetimes read back from SQLite; and a session's statements follow its transaction when it changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, column, select, table, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from server import ledger
from server.audit import chain
from server.audit.models import AuditRecord
from server.storage import prepared
from server.storage.database import Database
from server.storage.prepared import driver, forms
from server.storage.types import UTCDateTime
from tools.store import access

AT = datetime(2026, 12, 4, 10, 0, 0, 123456, tzinfo=UTC)
ELSEWHERE = AT.astimezone(timezone(timedelta(hours=2)))  # the same instant, written in another zone
BUCKET = {"k_budget": "daily", "k_holder": "agent:a", "k_unit": "EUR", "k_period": "2026-12-04"}
TWICE = prepared.Prepared(
    select(ledger.ENTRIES.c.id).where(
        ledger.ENTRIES.c.at > bindparam("t", type_=UTCDateTime()),
        ledger.ENTRIES.c.at < bindparam("t", type_=UTCDateTime()),
    )
)


def _audit_values(at: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {name: f"v_{name}" for name in AuditRecord.model_fields if name != "seq"}
    values.update(at=at, latency_us=17, leaf_index=None, prev_hash=None, hash=None, actor=None)
    return values


def _calls(dialect: str) -> list[tuple[prepared.Prepared, dict[str, Any]]]:
    entry = {"budget": "daily", "holder": "agent:a", "unit": "EUR", "period": "2026-12-04", "amount": 1250}
    return [
        (access._ORDER_LOCKED, {"order_id": "ord_1"}),
        (access._ADD_REFUNDED, {"k_order_id": "ord_1", "k_amount": -300}),
        (ledger._SPENT_NOW_LOCKED, BUCKET),
        (ledger._ADD_NOW, {**BUCKET, "k_amount": 1250, "k_at": AT}),
        (ledger._ADD_CAPPED_NOW, {**BUCKET, "k_amount": 1250, "k_at": ELSEWHERE, "k_cap": 5000}),  # k_amount twice
        (
            ledger._WINDOW_TOTAL_NOW,
            ledger.window_params(ledger.LedgerKey("daily", "agent:a", "EUR", "rolling", AT), AT),
        ),
        (ledger._ADD_ENTRY, {**entry, "at": AT, "tool": "refund_create", "audit_id": "aud_1"}),
        (ledger._ADD_ENTRY, {**entry, "at": None, "tool": None, "audit_id": "aud_2"}),
        (ledger._ADD_TO_SLOT[dialect], {"budget": "d", "holder": "h", "unit": "EUR", "slot": "d1", "spent": 5}),
        (chain._INSERT_RECORD, _audit_values(AT)),
        (chain._INSERT_RECORD, _audit_values(ELSEWHERE)),
        (TWICE, {"t": AT}),
        (TWICE, {"t": ELSEWHERE}),
    ]


def _same(left: Any, right: Any) -> bool:
    """Equal, and of the same types all the way down (a tuple of str and int stays one)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, tuple | list):
        return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    return bool(left == right)


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()], ids=["sqlite", "postgresql"])
def test_the_values_bound_are_the_same_values_of_the_same_types_as_the_general_steps_give(dialect: Any) -> None:
    for statement, params in _calls(dialect.name):
        form = statement._form_for(dialect, params)
        assert form is statement.form(dialect, forms._insert_keys(statement, params))
        fast = forms._values(form, params)
        general = forms._values_in_steps(form, params)
        assert _same(fast, general), (statement.statement, fast, general)
        if dialect.name == "sqlite":
            assert isinstance(fast, tuple) and len(fast) == len(form.names or ())


def test_a_timestamp_bound_in_two_places_is_the_same_text_in_both() -> None:
    values = forms._values(TWICE.form(sqlite.dialect()), {"t": ELSEWHERE})
    assert values == ("2026-12-04 10:00:00.123456", "2026-12-04 10:00:00.123456")


def test_a_statement_missing_parameters_is_refused_naming_every_one_of_them_before_any_is_processed() -> None:
    form = ledger._ADD_CAPPED_NOW.form(sqlite.dialect())
    with pytest.raises(ValueError, match=r"without the parameters k_amount, k_cap$"):
        forms._values(form, {**BUCKET, "k_at": "not a datetime: never processed"})
    with pytest.raises(ValueError, match="naive datetime"):  # all there: the processor refuses what it must
        forms._values(form, {**BUCKET, "k_amount": 1, "k_cap": 2, "k_at": datetime(2026, 12, 4)})


@pytest.mark.parametrize(
    "stored",
    [
        "2026-12-04 10:00:00.123456",
        "2026-12-04 00:00:00.000000",
        "1999-01-31 23:59:59.999999",
        "2026-12-04T10:00:00.123456",
        "2026-12-04 10:00:00",
        "2026-12-04",
        "2026-12-04 10:00:00+02:00",
        "2026-12-04 10:00:00.12+02:00",
        "2026-12-04 10:00:00.12345Z",
        "2026-12-04 10:00:00.1-05:30",
        None,
    ],
)
def test_a_timestamp_read_back_from_sqlite_is_the_aware_utc_datetime_the_type_itself_makes(stored: str | None) -> None:
    dialect = sqlite.dialect()
    general = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert general is not None
    form = prepared.Prepared(select(ledger.ENTRIES.c.at)).form(dialect)
    (shortcut,) = form.results
    assert shortcut is not None
    expected = general(stored)
    got = shortcut(stored)
    assert got == expected and type(got) is type(expected)
    if expected is not None:
        assert got.tzinfo is expected.tzinfo is UTC
        assert got.isoformat() == expected.isoformat()


def test_text_sqlite_cannot_parse_as_a_timestamp_fails_as_the_type_itself_fails() -> None:
    dialect = sqlite.dialect()
    general = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    (shortcut,) = prepared.Prepared(select(ledger.ENTRIES.c.at)).form(dialect).results
    assert general is not None and shortcut is not None
    for stored in ("not a timestamp at all, 26c", "2026-13-04 10:00:00.123456"):
        with pytest.raises(ValueError, match=r".") as expected:
            general(stored)
        with pytest.raises(ValueError, match=r".") as got:
            shortcut(stored)
        assert str(got.value) == str(expected.value)


def test_rows_read_through_the_result_processors_are_the_rows_the_column_by_column_steps_make() -> None:
    form = access._ORDER_LOCKED.form(sqlite.dialect())
    rows = [
        ("ord_1", "cus_1", "acme", "DELIVERED", "EUR", 9000, 0, "2026-12-03 10:00:00.123456", None),
        ("ord_2", "cus_2", "globex", "SHIPPED", "USD", 100, 50, "2026-12-02 08:00:00.000001", "pi_1"),
    ]
    made = forms._processed(form, rows)
    assert made == forms._processed_column_by_column(form, rows)
    assert made[1].status.name == "SHIPPED" and made[1].placed_at == datetime(2026, 12, 2, 8, 0, 0, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="zip"):  # a row of another width is refused, as zip(strict=True) does
        forms._processed(form, [rows[0], rows[1][:-1]])


# --- the transaction's connection, found once per transaction ------------------------------------------------------

COUNTER = table("counter", column("id"), column("value"))
INCREMENT = prepared.Prepared(update(COUNTER).where(COUNTER.c.id == 1).values(value=COUNTER.c.value + 1))
VALUE = prepared.Prepared(select(COUNTER.c.value).where(COUNTER.c.id == 1))


@pytest.mark.anyio
async def test_a_session_statements_run_in_its_current_transaction_after_an_earlier_one_committed_or_rolled_back(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'follow.db'}")
    try:
        async with db.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)"))
            await connection.execute(text("INSERT INTO counter (id, value) VALUES (1, 0)"))
        async with AsyncSession(db.engine, expire_on_commit=False) as session:
            async with session.begin():
                await prepared.run(session, INCREMENT)
                first = session.sync_session.get_transaction()
                assert driver._held_driver(session.sync_session) is not None
            assert driver._held_driver(session.sync_session) is None  # that transaction is over
            async with session.begin():
                assert driver._held_driver(session.sync_session) is None  # a new one: found again
                assert (await prepared.run(session, VALUE)).scalar() == 1
                await prepared.run(session, INCREMENT)
                assert session.sync_session.get_transaction() is not first
                assert (await prepared.run(session, VALUE)).scalar() == 2
                await session.rollback()  # the second transaction's write is undone with it
            async with session.begin():
                assert (await prepared.run(session, VALUE)).scalar() == 1
    finally:
        await db.dispose()
