"""A transaction commits exactly what it says it did, on both engines: a savepoint's rollback undoes the statements
sent straight to the driver and the writes still queued (server.storage.prepared.deferred.begin_savepoint); a unit
of work whose work caught a failed statement refuses to commit instead of reporting success; and a unit whose ORM
transaction began without a statement still commits its writes (server.storage.pg_unit)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import bindparam, func, insert, select, text
from sqlmodel import select as select_models
from sqlmodel.ext.asyncio.session import AsyncSession

from server.ledger import LedgerEntry
from server.storage.database import Database
from server.storage.prepared import Prepared, begin_savepoint, defer, run

pytestmark = pytest.mark.anyio

ENTRIES = LedgerEntry.__table__  # type: ignore[attr-defined]
INSERT_ENTRY = Prepared(insert(ENTRIES))
AUDIT_IDS = Prepared(select(ENTRIES.c.audit_id).order_by(ENTRIES.c.audit_id))
COUNT_OF = Prepared(select(func.count()).select_from(ENTRIES).where(ENTRIES.c.audit_id == bindparam("audit_id")))


def _entry(audit_id: str) -> dict[str, Any]:
    at = datetime.now(UTC)
    return {"budget": "daily", "holder": "agent", "unit": "EUR", "period": "p", "amount": 1, "at": at,
            "tool": "t", "audit_id": audit_id}  # fmt: skip


async def _audit_ids(db: Database) -> list[str]:
    rows = (await db.run_in_transaction(lambda session: run(session, AUDIT_IDS))).rows
    return [row[0] for row in rows]


@pytest.mark.parametrize("before", ["nothing", "an ORM statement"])
@pytest.mark.parametrize("inside", ["a queued write", "a queued write, then a read that sends it"])
async def test_a_rolled_back_savepoint_undoes_the_writes_made_in_it_and_keeps_the_ones_before_and_after(
    db: Database, before: str, inside: str
) -> None:
    async def work(session: AsyncSession) -> None:
        if before == "an ORM statement":
            await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        await defer(session, INSERT_ENTRY, _entry("aud_1_before"))
        savepoint = await begin_savepoint(session)
        await defer(session, INSERT_ENTRY, _entry("aud_2_inside"))
        if inside != "a queued write":
            assert (await run(session, COUNT_OF, {"audit_id": "aud_2_inside"})).scalar() == 1
        await savepoint.rollback()
        await defer(session, INSERT_ENTRY, _entry("aud_3_after"))

    await db.run_in_transaction(work)
    assert await _audit_ids(db) == ["aud_1_before", "aud_3_after"]


async def test_a_kept_savepoint_keeps_its_writes(db: Database) -> None:
    async def work(session: AsyncSession) -> None:
        await defer(session, INSERT_ENTRY, _entry("aud_1_before"))
        savepoint = await begin_savepoint(session)
        await defer(session, INSERT_ENTRY, _entry("aud_2_inside"))
        await savepoint.commit()
        assert not savepoint.is_active

    await db.run_in_transaction(work)
    assert await _audit_ids(db) == ["aud_1_before", "aud_2_inside"]


async def test_a_unit_whose_work_caught_a_failed_statement_refuses_to_commit_and_writes_nothing(
    db: Database,
) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite goes on after a failed statement; PostgreSQL aborts the whole transaction")

    async def swallow(session: AsyncSession) -> str:
        await run(session, INSERT_ENTRY, _entry("aud_written_first"))
        with contextlib.suppress(Exception):  # the work under test swallows the statement's error
            await run(session, Prepared(select(text("1/0"))))
        return "done"

    with pytest.raises(Exception, match="cannot commit"):
        await db.run_in_transaction(swallow)
    assert await _audit_ids(db) == []


@pytest.mark.parametrize("how", ["an empty ORM savepoint", "an unchanged object added"])
async def test_a_unit_whose_orm_transaction_began_without_a_statement_still_commits_its_writes(
    db: Database, how: str
) -> None:
    await db.run_in_transaction(lambda session: defer(session, INSERT_ENTRY, _entry("aud_0_seed")))
    async with db.session() as reader:
        seed = (await reader.exec(select_models(LedgerEntry))).one()
        reader.expunge(seed)

    async def work(session: AsyncSession) -> None:
        if how == "an empty ORM savepoint":
            await session.begin_nested()  # SQLAlchemy's own: no SAVEPOINT is sent until a statement runs
        else:
            session.add(seed)  # the ORM's transaction begins, with nothing to flush
        await defer(session, INSERT_ENTRY, _entry("aud_1_written"))

    await db.run_in_transaction(work)
    assert await _audit_ids(db) == ["aud_0_seed", "aud_1_written"]
