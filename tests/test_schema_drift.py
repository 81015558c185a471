"""A database made before a column was added stops the start with one sentence naming the missing columns."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from server.storage.database import Database
from server.storage.drift import SchemaOutOfDate
from server.storage.schema import create_schema

pytestmark = pytest.mark.anyio


async def test_an_older_database_missing_a_column_is_named_at_start(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(text("ALTER TABLE idempotency_keys DROP COLUMN owner"))
    with pytest.raises(SchemaOutOfDate, match=r"lacks idempotency_keys\.owner"):
        await create_schema(db)
