"""One sequencer is active across replicas (a PostgreSQL advisory lock), a standby takes over when the active one
dies, the in-process sequencer of a server integrates within its interval, and a batch that could not place every
record it read (someone placed one meanwhile) writes nothing."""

from __future__ import annotations

import signal
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from server.audit.sequencer import PlacementError, Sequencer, integrate_batch, sequencing
from server.audit.tree import latest_head
from server.storage.database import Database
from server.storage.schema import create_schema
from tests.audit.support import append_records, rows
from tests.conftest import empty_postgres_schema

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


async def _all_integrated(db: Database, count: int) -> None:
    with anyio.fail_after(60):
        while True:
            placed = [row for row in await rows(db) if row["leaf_index"] is not None]
            if len(placed) == count:
                return
            await anyio.sleep(0.1)


async def _lines(process: Process, into: defaultdict[str, anyio.Event]) -> None:
    assert process.stdout is not None
    buffer = ""
    async for chunk in TextReceiveStream(process.stdout):
        buffer += chunk
        *lines, buffer = buffer.split("\n")
        for line in lines:
            into[line].set()


async def test_postgres_a_standby_replica_takes_over_when_the_active_sequencer_is_killed(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("on SQLite the sequencer runs in the serving process; there are no replicas")
    url = db.url.render_as_string(hide_password=False)
    seen: defaultdict[str, anyio.Event] = defaultdict(anyio.Event)

    async def wait_for(line: str) -> None:
        with anyio.fail_after(90):  # a process start is slow on a loaded machine
            await seen[line].wait()

    first = await anyio.open_process([sys.executable, "-m", "tests.audit.sequencer_process", url, "a"], cwd=REPO)
    second = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_lines, first, seen)
            await wait_for("a active")
            second = await anyio.open_process(
                [sys.executable, "-m", "tests.audit.sequencer_process", url, "b"], cwd=REPO
            )
            group.start_soon(_lines, second, seen)
            await wait_for("b standby")
            await append_records(db, 5)
            await _all_integrated(db, 5)
            assert not seen["b active"].is_set()  # one sequencer at a time
            first.send_signal(signal.SIGKILL)
            await first.wait()
            await wait_for("b active")
            await append_records(db, 4, start=10)
            await _all_integrated(db, 9)
            group.cancel_scope.cancel()
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
    assert sorted(row["leaf_index"] for row in await rows(db)) == list(range(9))


async def test_the_in_process_sequencer_integrates_within_its_interval(db: Database) -> None:
    sequencer = Sequencer(db, instance="test", key=None, interval=0.2)
    async with sequencing(sequencer):
        await append_records(db, 3)
        await _all_integrated(db, 3)
        assert sequencer.active
        assert sequencer.batches >= 1


async def test_a_backlog_of_full_batches_is_drained_with_turns_of_the_event_loop_between_them(db: Database) -> None:
    await append_records(db, 50)
    sequencer = Sequencer(db, instance="test", key=None, interval=60, batch_size=10)
    seen: list[int] = []

    async def watch() -> None:  # runs whenever the event loop gets a turn
        while sequencer.batches < 5:
            seen.append(sequencer.batches)
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            async with sequencing(sequencer):
                await _all_integrated(db, 50)
            group.cancel_scope.cancel()
    assert sequencer.batches >= 5
    assert {1, 2, 3, 4} <= set(seen), f"no turn of the loop between batches: saw {sorted(set(seen))}"


async def test_postgres_logs_in_two_schemas_of_one_database_each_have_an_active_sequencer(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("a SQLite file holds one log")
    with empty_postgres_schema() as other_url:
        other = Database(other_url)
        try:
            await create_schema(other)
            first = Sequencer(db, instance="first", key=None, interval=0.2)
            second = Sequencer(other, instance="second", key=None, interval=0.2)
            async with sequencing(first), sequencing(second):
                with anyio.fail_after(60):
                    await first.activated.wait()
                    await second.activated.wait()
                await append_records(db, 2)
                await append_records(other, 3)
                await _all_integrated(db, 2)
                await _all_integrated(other, 3)
        finally:
            await other.dispose()


async def test_postgres_a_batch_that_could_not_place_every_record_it_read_writes_no_tree_head(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL: on SQLite nothing else can write while a batch holds the write lock")
    import psycopg

    await append_records(db, 3)
    address = db.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def placed_meanwhile() -> datetime:
        # called by the batch after it read the pending records and before it writes: another writer places one
        with psycopg.connect(address, autocommit=True) as other:
            other.execute("UPDATE audit_records SET leaf_index = 100 WHERE seq = (SELECT min(seq) FROM audit_records)")
        return datetime.now(UTC)

    with pytest.raises(PlacementError):
        await integrate_batch(db, instance="test", clock=placed_meanwhile)
    async with db.engine.connect() as connection:
        assert await latest_head(connection) is None
    assert sorted(row["leaf_index"] is None for row in await rows(db)) == [False, True, True]
