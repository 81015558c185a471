"""A bare database with the schema (no server) for the idempotency store's own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import server.idempotency  # noqa: F401 - registers the idempotency_keys table
from server.storage.database import Database
from server.storage.schema import create_schema


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await create_schema(database)
    try:
        yield database
    finally:
        await database.dispose()
