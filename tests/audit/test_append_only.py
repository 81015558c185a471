"""The database itself refuses to change or remove audit records, except the sequencer's one-time leaf index; and
the log stays one tree however many writers append at once, in one process or several."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from sqlalchemy.exc import DBAPIError

from server.audit import chain
from server.audit.verify import verify_log
from server.storage.database import Database
from server.storage.health import audit_trigger_problems
from server.storage.schema import POSTGRES_TRIGGERS, SQLITE_TRIGGERS, create_schema
from tests.audit.support import (
    append_and_integrate,
    append_records,
    drop_audit_triggers,
    execute,
    integrate,
    make_record,
    rows,
)

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_records SET decision = 'deny' WHERE leaf_index = 1",
        "UPDATE audit_records SET decision = 'deny', leaf_index = NULL WHERE leaf_index = 1",
        "UPDATE audit_records SET leaf_index = leaf_index + 100",
        "UPDATE audit_records SET leaf_index = NULL WHERE leaf_index = 2",
        "UPDATE audit_records SET seq = seq + 100",
        "DELETE FROM audit_records WHERE leaf_index = 2",
        "DELETE FROM audit_records",
        "UPDATE audit_tree_nodes SET hash = 'x'",
        "DELETE FROM audit_tree_nodes",
        "UPDATE audit_tree_heads SET root_hash = 'x'",
        "DELETE FROM audit_tree_heads",
        "DELETE FROM audit_head",
        "UPDATE audit_head SET seq = -1",
    ],
)
async def test_the_database_refuses_to_change_or_remove_audit_records(db: Database, statement: str) -> None:
    await append_and_integrate(db, 3)
    with pytest.raises(DBAPIError, match=r"append-only|only the leaf_index|only moves forward|cannot be deleted"):
        await execute(db, statement)
    assert len(await rows(db)) == 3
    assert (await verify_log(db)).ok


async def test_the_leaf_index_can_be_set_once_and_nothing_else_with_it(db: Database) -> None:
    await append_records(db, 2)
    with pytest.raises(DBAPIError, match="only the leaf_index"):
        await execute(db, "UPDATE audit_records SET leaf_index = 0, tool = 'refund_create' WHERE seq = 1")
    await execute(db, "UPDATE audit_records SET leaf_index = 7 WHERE seq = 1")  # what the sequencer does
    with pytest.raises(DBAPIError, match="only the leaf_index"):
        await execute(db, "UPDATE audit_records SET leaf_index = 8 WHERE seq = 1")
    assert {row["seq"]: row["leaf_index"] for row in await rows(db)} == {1: 7, 2: None}


async def test_a_new_record_must_carry_its_leaf_hash_and_no_position(db: Database) -> None:
    for overrides in ({"leaf_index": 0}, {"leaf_hash": None}):
        values = chain.record_values(make_record(1))
        values.update({"seq": 50, "leaf_hash": "ab" * 32, **overrides})
        with pytest.raises(DBAPIError, match="carries its leaf hash and no position"):
            async with db.engine.begin() as connection:
                await connection.execute(chain.RECORDS.insert().values(values))
    assert await rows(db) == []


async def test_postgres_refuses_to_truncate_the_audit_log(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has no TRUNCATE")
    await append_and_integrate(db, 2)
    for table in ("audit_records", "audit_head", "audit_tree_nodes", "audit_tree_heads"):
        with pytest.raises(DBAPIError, match="append-only"):
            await execute(db, f"TRUNCATE {table} CASCADE")
    assert len(await rows(db)) == 2


async def test_dropped_triggers_are_named_by_the_database_check_and_not_silently_recreated(db: Database) -> None:
    assert await audit_trigger_problems(db) == []
    await append_records(db, 2)
    await drop_audit_triggers(db)
    await create_schema(db)  # at the newest revision already: an upgrade changes nothing, so the loss stays visible
    problems = await audit_trigger_problems(db)
    assert "trigger audit_records_no_delete on audit_records: missing" in problems
    assert len(problems) == len(SQLITE_TRIGGERS if db.is_sqlite else POSTGRES_TRIGGERS)


async def test_concurrent_writers_in_two_processes_and_many_tasks_end_in_one_verified_tree(db: Database) -> None:
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
            if in_process % 10 == 0:
                await integrate(db)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for task in range(6):
                group.start_soon(writer, 10_000 * (task + 1))
            for process in processes:
                await process.wait()
    for process in processes:
        assert process.returncode == 0, (await process.stderr.receive() if process.stderr else b"").decode()
    await integrate(db)
    all_rows = await rows(db)
    assert len(all_rows) == 2 * 4 * 10 + in_process
    assert sorted(row["leaf_index"] for row in all_rows) == list(range(len(all_rows)))
    report = await verify_log(db)
    assert report.ok, report.first_break
    assert report.records == report.tree_size == len(all_rows)
