"""An intent written and read with the prepared statements (server.effects.intents) is the row the ORM reads, on
each engine: every column, the times timezone-aware UTC, and a resolution that only lands on a still-started row."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from server.effects import intents
from server.effects.models import COMPLETED, FAILED, STARTED, EffectIntent, Intent
from server.effects.outcome import write_resolution
from server.storage.database import Database
from tests.effects import support

pytestmark = pytest.mark.anyio

WRITTEN = datetime(2026, 12, 7, 14, 30, 5, 123456, tzinfo=UTC)


def _started() -> Intent:
    return support.started_intent(
        WRITTEN,
        WRITTEN + timedelta(seconds=60),
        id="int_rows",
        audit_id="aud_rows",
        provider_key="mandate-aud_rows",
        arguments='{"amount":"1.00"}',
        arguments_digest="d" * 64,
        plan='{"order_id":"ord_1"}',
        customer_id="cus_1",
        call_key="k-1",
        request_id="7",
    )


async def _in_transaction(db: Database, work: Any) -> Any:
    return await db.run_in_transaction(work)


async def test_an_intent_inserted_with_the_prepared_statement_reads_back_equal_and_as_the_orm_reads_it(
    db: Database,
) -> None:
    intent = _started()

    async def insert(session: Any) -> None:
        await intents.insert_started(session, intent)

    await _in_transaction(db, insert)
    async with db.session() as session:
        read = await intents.get(session, intent.id)
        orm = (await session.exec(select(EffectIntent).where(EffectIntent.id == intent.id))).one()
        missing = await intents.get(session, "int_none")
    assert read == intent
    assert read is not None and read.created_at.tzinfo is not None and read.lease_until == intent.lease_until
    assert {name: getattr(orm, name) for name in intent.values()} == intent.values()
    assert missing is None


async def test_a_resolution_is_written_only_over_the_status_its_lock_read(db: Database) -> None:
    intent = _started()
    done = replace(
        intent, status=COMPLETED, resolved_at=WRITTEN, resolved_by="call", provider_object_id="re_1", answer="{}"
    )

    async def insert(session: Any) -> None:
        await intents.insert_started(session, intent)

    async def resolve(session: Any) -> Intent | None:
        locked = await intents.get_locked(session, intent.id)
        assert locked == intent
        await write_resolution(session, done, STARTED)
        return await intents.get(session, intent.id)

    await _in_transaction(db, insert)
    assert await _in_transaction(db, resolve) == done

    async def resolve_again(session: Any) -> None:  # the row is no longer started: nothing may change it
        await write_resolution(session, replace(done, status=FAILED, error_code="late"), STARTED)

    with pytest.raises(RuntimeError, match="changed 0 rows, not 1"):
        await _in_transaction(db, resolve_again)
    async with db.session() as session:
        assert await intents.get(session, intent.id) == done
