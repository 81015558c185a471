"""``mandate audit verify`` at scale: the leaves are scanned in aligned ranges, in worker processes for a large log,
from the database's canonical JSON; what it cannot settle that way is recomputed exactly. The worker processes name
the same first problem as a scan in this process, and a record the database encodes differently from the writer is
settled, not reported (server/audit/scan.py, levels.py, replay.py)."""

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
}


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
async def test_worker_processes_name_the_same_first_problem_as_a_scan_in_this_process(
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
