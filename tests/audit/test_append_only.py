"""The database itself refuses to change or remove audit records, and the chain stays linear however many writers
append at once, in one process or several."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from sqlalchemy.exc import DBAPIError

from server.audit.verify import verify_chain
from server.storage.database import Database
from server.storage.schema import create_schema
from tests.audit.support import append_records, drop_audit_triggers, execute, rows

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_records SET decision = 'deny' WHERE seq = 2",
        "UPDATE audit_records SET seq = seq + 100",
        "DELETE FROM audit_records WHERE seq = 2",
        "DELETE FROM audit_records",
        "DELETE FROM audit_head",
        "UPDATE audit_head SET seq = 1",
    ],
)
async def test_the_database_refuses_to_change_or_remove_audit_records(db: Database, statement: str) -> None:
    await append_records(db, 3)
    with pytest.raises(DBAPIError, match=r"append-only|only moves forward|cannot be deleted"):
        await execute(db, statement)
    assert len(await rows(db)) == 3
    assert (await verify_chain(db)).ok


async def test_postgres_refuses_to_truncate_the_audit_trail(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has no TRUNCATE")
    await append_records(db, 2)
    for table in ("audit_records", "audit_head"):
        with pytest.raises(DBAPIError, match="append-only"):
            await execute(db, f"TRUNCATE {table}")
    assert len(await rows(db)) == 2


async def test_creating_the_schema_again_restores_dropped_triggers(db: Database) -> None:
    await append_records(db, 2)
    await drop_audit_triggers(db)
    await create_schema(db)
    await create_schema(db)  # idempotent
    with pytest.raises(DBAPIError, match="append-only"):
        await execute(db, "DELETE FROM audit_records")
    assert len(await rows(db)) == 2


async def test_concurrent_writers_in_two_processes_and_many_tasks_keep_one_linear_chain(db: Database) -> None:
    url = db.url.render_as_string(hide_password=False)
    processes = [
        await anyio.open_process([sys.executable, "-m", "tests.audit.writer", url, "4", "10"], cwd=REPO)
        for _ in range(2)
    ]
    in_process = 0

    async def writer(start: int) -> None:
        nonlocal in_process
        # keep writing until both processes are done, so their appends interleave with ours
        while any(process.returncode is None for process in processes) or in_process < 40:
            await append_records(db, 1, start=start + in_process)
            in_process += 1

    with anyio.fail_after(40):
        async with anyio.create_task_group() as group:
            for task in range(6):
                group.start_soon(writer, 10_000 * (task + 1))
            for process in processes:
                await process.wait()
    for process in processes:
        assert process.returncode == 0, (await process.stderr.receive() if process.stderr else b"").decode()
    all_rows = await rows(db)
    assert len(all_rows) == 2 * 4 * 10 + in_process
    assert [row["seq"] for row in all_rows] == list(range(1, len(all_rows) + 1))
    assert len({row["prev_hash"] for row in all_rows}) == len(all_rows)  # no two records share a parent: no fork
    report = await verify_chain(db)
    assert report.ok, report.first_break
    assert report.records == len(all_rows)


async def test_the_database_refuses_a_record_that_does_not_extend_the_head(db: Database) -> None:
    from server.audit import chain
    from tests.audit.support import make_record

    (last,) = await append_records(db, 1)
    for seq, prev_hash in ((2, "0" * 64), (3, last.hash), (1, "0" * 64)):  # a fork, a gap, a second seq 1
        forged = make_record(7)
        forged.seq, forged.prev_hash = seq, prev_hash
        forged.hash = chain.link_hash(forged)
        with pytest.raises(DBAPIError, match=r"extend the chain head|UNIQUE|unique|duplicate"):
            async with db.engine.begin() as connection:
                await connection.execute(chain.RECORDS.insert().values(chain.record_values(forged)))
    assert len(await rows(db)) == 1
    assert (await verify_chain(db)).ok
