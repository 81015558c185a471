"""Revision 0002 on a database that already holds audit records: every record comes through unchanged, the log still
verifies, the triggers still refuse, and the records appended afterwards continue the insertion key."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert, inspect
from sqlalchemy.exc import DBAPIError

from server.audit import chain
from server.audit.merkle import leaf_hash
from server.audit.verify import verify_log
from server.storage import migrate
from server.storage.database import Database
from tests.audit.support import execute, integrate, make_record, rows

pytestmark = pytest.mark.anyio


def _as_written_before(index: int, **overrides: Any) -> dict[str, Any]:
    """A record's columns as a server at revision 0001 inserted them (on SQLite with ``MAX(seq) + 1`` itself)."""
    values = chain.record_values(make_record(index, **overrides))
    values["leaf_index"] = values["prev_hash"] = values["hash"] = None
    values["leaf_hash"] = leaf_hash(chain.leaf_data(values)).hex()
    values["seq"] = index + 1
    return values


async def _insert(db: Database, *records: dict[str, Any]) -> None:
    async with db.engine.begin() as connection:
        for values in records:  # PostgreSQL's identity column assigns seq
            row = values if db.is_sqlite else {name: value for name, value in values.items() if name != "seq"}
            await connection.execute(insert(chain.RECORDS).values(row))


async def _indexes(db: Database) -> dict[str, Any]:
    async with db.engine.connect() as connection:
        found = await connection.run_sync(lambda sync: inspect(sync).get_indexes("audit_records"))
    return {index["name"]: index for index in found}


async def test_records_written_before_revision_0002_come_through_it_unchanged(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        await migrate.upgrade(db, "0001")
        await _insert(
            db, *(_as_written_before(index, approval_id="apr_1" if index == 1 else None) for index in range(3))
        )
        await integrate(db)  # the first three are in the log before the migration, the fourth is pending across it
        await _insert(db, _as_written_before(3))
        before = await rows(db)

        assert await migrate.upgrade(db) == ("0001", migrate.head_revision())

        assert await rows(db) == before
        if db.is_sqlite:  # INTEGER PRIMARY KEY: the table's rowid, no index of its own
            async with db.engine.connect() as connection:
                columns = (await connection.exec_driver_sql("PRAGMA table_info(audit_records)")).all()
            assert [(name, kind, key) for _, name, kind, _, _, key in columns if name == "seq"] == [
                ("seq", "INTEGER", 1)
            ]
        assert await migrate.schema_differences(db) == []
        indexes = await _indexes(db)
        assert "ix_audit_records_trace_id" not in indexes
        assert "ix_audit_records_approval_id" in indexes

        async def append(session: Any) -> None:
            await chain.append(session, chain.record_values(make_record(4)))

        await db.run_in_transaction(append)
        after = await rows(db)
        assert [row["seq"] for row in after] == [row["seq"] for row in before] + [before[-1]["seq"] + 1]
        await integrate(db)
        report = await verify_log(db)
        assert report.ok, report.first_break
        assert (report.records, report.pending) == (5, 0)
        with pytest.raises(DBAPIError, match="append-only"):
            await execute(db, "DELETE FROM audit_records WHERE seq = 1")
        with pytest.raises(DBAPIError, match="only the leaf_index"):
            await execute(db, "UPDATE audit_records SET decision = 'deny' WHERE seq = 1")
    finally:
        await db.dispose()
