"""A database made before the migrations that lacks a column no migration adds stops ``mandate db upgrade`` with one
sentence naming the missing columns, and changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from server.storage.database import Database
from server.storage.drift import SchemaOutOfDate
from server.storage.schema import create_schema

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
