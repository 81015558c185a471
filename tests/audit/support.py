"""Helpers for the audit tests: synthetic records appended through the real call-path append and integrated by the
real sequencer, raw SQL that bypasses the application (as an attacker with database access would), and the trigger
names to drop first."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text

from server.audit import chain
from server.audit.models import AuditRecord
from server.audit.query import AuditRow
from server.audit.sequencer import Integrated, integrate_all
from server.storage.database import Database
from server.storage.schema import POSTGRES_TRIGGERS, SQLITE_TRIGGERS

BASE_TIME = datetime(2025, 1, 31, 9, 0, tzinfo=UTC)


def make_record(index: int, **overrides: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "seq": 0,
        "id": f"aud_{uuid.uuid4().hex}",
        "at": BASE_TIME + timedelta(seconds=index),
        "instance": "test-instance",
        "kind": "call",
        "subject": f"agent:writer{index % 3}",
        "client_id": f"writer{index % 3}-agent",
        "scopes": "orders:read",
        "transport": "stdio",
        "tool": "orders_list",
        "customer_id": "cus_1001",
        "arguments": '{"customer_id":"cus_1001"}',
        "decision": "allow",
        "outcome": "succeeded",
        "latency_us": 1000 + index,
    }
    values.update(overrides)
    return AuditRecord(**values)


async def append_records(db: Database, count: int, *, start: int = 0, **overrides: Any) -> list[AuditRecord]:
    """Append ``count`` synthetic records, each in a transaction of its own, as the server does."""
    appended: list[AuditRecord] = []
    for index in range(start, start + count):
        record = make_record(index, **overrides)

        async def work(session: Any, record: AuditRecord = record) -> AuditRecord:
            return await chain.append(session, record)

        appended.append(await db.run_in_transaction(work))
    return appended


async def integrate(db: Database, key: Any = None) -> list[Integrated]:
    """Run the sequencer until nothing is pending."""
    return await integrate_all(db, instance="test-sequencer", key=key)


async def append_and_integrate(db: Database, count: int, *, batches: int = 1, **overrides: Any) -> list[AuditRecord]:
    """Append ``count`` records and integrate them in ``batches`` batches (so several tree heads are stored)."""
    appended: list[AuditRecord] = []
    per = -(-count // batches)
    for start in range(0, count, per):
        appended.extend(await append_records(db, min(per, count - start), start=start, **overrides))
        await integrate(db)
    return appended


async def execute(db: Database, *statements: str | tuple[str, dict[str, Any]]) -> None:
    """Run raw SQL in one transaction, outside the application's code paths."""
    async with db.engine.begin() as connection:
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, {})
            await connection.execute(text(sql), params)


async def rows(db: Database) -> list[AuditRow]:
    async with db.engine.connect() as connection:
        result = await connection.execute(select(chain.RECORDS).order_by(chain.RECORDS.c.seq))
        return [dict(row._mapping) for row in result]


async def drop_audit_triggers(db: Database) -> None:
    """What an attacker with owner rights on the database would do first."""
    if db.is_sqlite:
        await execute(db, *(f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE_TRIGGERS))
        return
    await execute(db, *(f"DROP TRIGGER IF EXISTS {name} ON {table}" for name, (table, _) in POSTGRES_TRIGGERS.items()))


async def drop_not_null(db: Database, column: str) -> None:
    """Let ``column`` of the records hold a null, as a database owner can: PostgreSQL drops the constraint; SQLite,
    whose constraints are part of the table, gets the table rebuilt without them (``CREATE TABLE ... AS``)."""
    if not db.is_sqlite:
        await execute(db, f"ALTER TABLE audit_records ALTER COLUMN {column} DROP NOT NULL")
        return
    await execute(
        db,
        "CREATE TABLE audit_records_copy AS SELECT * FROM audit_records",
        "DROP TABLE audit_records",
        "ALTER TABLE audit_records_copy RENAME TO audit_records",
    )


async def make_audit_inserts_fail(db: Database) -> None:
    """A trigger that refuses every new audit record: the audit store is 'down' for this test."""
    if db.is_sqlite:
        await execute(
            db,
            "CREATE TRIGGER audit_insert_fails BEFORE INSERT ON audit_records "
            "BEGIN SELECT RAISE(ABORT, 'audit store unavailable'); END",
        )
        return
    await execute(
        db,
        "CREATE FUNCTION audit_insert_fails() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'audit store unavailable'; END $$",
        "CREATE TRIGGER audit_insert_fails BEFORE INSERT ON audit_records "
        "FOR EACH ROW EXECUTE FUNCTION audit_insert_fails()",
    )
