"""``mandate audit verify`` at scale: the leaves are scanned in aligned ranges from the database's canonical JSON (on
SQLite hashed by worker processes, on PostgreSQL hashed and summed up per range by the server, several ranges at
once); what it cannot settle that way is recomputed exactly. The parallel scan names the same first problem as a scan
one range at a time, and a record the database encodes differently from the writer is settled, not reported
(server/audit/scan.py, levels.py, replay.py)."""

from __future__ import annotations

import pytest

from server.audit import chain
from server.audit.verify import verify_log
from server.storage.database import Database
from tests.audit.support import append_and_integrate, drop_audit_triggers, execute, rows

pytestmark = pytest.mark.anyio

N = 40

TAMPERING = {
    "edited": (("UPDATE audit_records SET decision = 'deny' WHERE leaf_index = 21",), (21, "altered")),
    "deleted": (("DELETE FROM audit_records WHERE leaf_index = 30",), (30, "missing")),
    "reordered": (
        (
            "UPDATE audit_records SET leaf_index = -1 WHERE leaf_index = 17",
            "UPDATE audit_records SET leaf_index = 17 WHERE leaf_index = 18",
            "UPDATE audit_records SET leaf_index = 18 WHERE leaf_index = -1",
        ),
        (10, "tree_mismatch"),
    ),
    "a time moved to another era or out of time": (
        # PostgreSQL: 2025 BC, which to_char's YYYY writes as 2025; SQLite: text that is no time at all
        (
            "UPDATE audit_records SET at = at - interval '4049 years' WHERE leaf_index = 12",
            "UPDATE audit_records SET at = 'not a time' WHERE leaf_index = 12",
        ),
        (12, "altered"),
    ),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
async def test_the_parallel_scan_names_the_same_first_problem_as_a_scan_one_range_at_a_time(
    db: Database, tampering: str
) -> None:
    await append_and_integrate(db, N, batches=4)  # tree heads at 10, 20, 30, 40
    here = await verify_log(db, batch_size=8, workers=0)
    there = await verify_log(db, batch_size=8, workers=2)
    assert here.ok and there.ok, (here.first_break, there.first_break)
    assert (
        (there.records, there.root_hash, there.heads_checked)
        == (here.records, here.root_hash, 4)
        == ((N, here.root_hash, 4))
    )
    await drop_audit_triggers(db)
    statements, expected = TAMPERING[tampering]
    if tampering.startswith("a time"):  # one statement per engine
        statements = statements[1:] if db.is_sqlite else statements[:1]
    await execute(db, *statements)
    here = await verify_log(db, batch_size=8, workers=0)
    there = await verify_log(db, batch_size=8, workers=2)
    assert here.first_break is not None and there.first_break is not None
    assert (here.first_break.leaf_index, here.first_break.problem) == expected
    assert there.first_break == here.first_break


async def test_a_record_the_database_encodes_otherwise_is_recomputed_exactly_and_verifies(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("SQLite: a time stored without microseconds is the same time, written differently")
    await append_and_integrate(db, 12, batches=2)
    await drop_audit_triggers(db)
    await execute(db, "UPDATE audit_records SET at = substr(at, 1, 19) WHERE leaf_index = 5")
    async with db.engine.connect() as connection:
        stored = (await connection.exec_driver_sql("SELECT at FROM audit_records WHERE leaf_index = 5")).scalar_one()
    assert len(stored) == 19  # no fraction: the database's JSON of it is not the writer's canonical form
    [row] = [row for row in await rows(db) if row["leaf_index"] == 5]
    assert chain.leaf_hash_of(row).hex() == row["leaf_hash"]  # the same time, so the same record
    report = await verify_log(db, batch_size=4)
    assert report.ok, report.first_break
    assert report.records == 12


async def test_an_edited_record_after_a_gap_is_not_reported_before_the_gap(db: Database) -> None:
    await append_and_integrate(db, 20, batches=1)
    await drop_audit_triggers(db)
    await execute(
        db,
        "DELETE FROM audit_records WHERE leaf_index = 6",
        "UPDATE audit_records SET outcome = 'failed' WHERE leaf_index = 3",
        "UPDATE audit_records SET outcome = 'failed' WHERE leaf_index = 14",
    )
    report = await verify_log(db, batch_size=4)
    assert report.first_break is not None
    assert (report.first_break.leaf_index, report.first_break.problem) == (3, "altered")
    await execute(db, "UPDATE audit_records SET outcome = 'succeeded' WHERE leaf_index = 3")
    report = await verify_log(db, batch_size=4)
    assert report.first_break is not None
    assert (report.first_break.leaf_index, report.first_break.problem) == (6, "missing")
    assert "the next is leaf 7" in report.first_break.detail


async def test_a_position_given_twice_is_caught_by_the_parallel_scan_and_the_scan_in_order(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL: the unique constraint on leaf_index can be dropped; SQLite's is part of the table")
    await append_and_integrate(db, N, batches=4)
    await drop_audit_triggers(db)
    await execute(
        db,
        "ALTER TABLE audit_records DROP CONSTRAINT audit_records_leaf_index_key",
        "UPDATE audit_records SET leaf_index = 20 WHERE leaf_index = 21",  # 20 twice, 21 absent: the count still fits
    )
    here = await verify_log(db, batch_size=8, workers=0)
    there = await verify_log(db, batch_size=8, workers=2)
    assert here.first_break is not None
    assert (here.first_break.leaf_index, here.first_break.problem) == (21, "missing")
    assert there.first_break == here.first_break
