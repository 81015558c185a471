"""A database made before the migrations is adopted by ``mandate db upgrade``: the columns added since are added and
the triggers re-created; one that lacks a column no migration adds stops the upgrade with one sentence naming the
missing columns, and changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from server.storage import migrate
from server.storage.database import Database
from server.storage.drift import SchemaOutOfDate
from server.storage.health import audit_trigger_problems
from server.storage.schema import create_schema
from tests.audit.support import drop_audit_triggers

pytestmark = pytest.mark.anyio


async def test_a_database_from_before_the_migrations_missing_a_column_is_named_at_upgrade(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(text("DROP TABLE alembic_version"))  # as create_schema left it before migrations
        await connection.execute(text("ALTER TABLE idempotency_keys DROP COLUMN owner"))
    with pytest.raises(SchemaOutOfDate, match=r"lacks idempotency_keys\.owner, which no migration adds"):
        await create_schema(db)
    async with db.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "alembic_version" not in tables  # the upgrade's transaction was rolled back


async def test_a_database_from_before_the_migrations_gets_the_columns_added_since_and_the_triggers(
    db: Database,
) -> None:
    await drop_audit_triggers(db)  # SQLite cannot drop a column its triggers name
    async with db.engine.begin() as connection:
        await connection.execute(text("DROP TABLE alembic_version"))
        for table, column in (
            ("orders", "cancel_audit_id"),
            ("audit_records", "origin"),
            ("audit_records", "user_agent"),
        ):
            await connection.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    await create_schema(db)
    assert await migrate.current(db) == migrate.head_revision()
    assert await migrate.schema_differences(db) == []
    assert await audit_trigger_problems(db) == []
