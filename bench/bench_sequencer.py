"""What one audit integration batch costs the serving process: per record placed, and when there is nothing to place.

    uv run python -m bench.bench_sequencer                  # SQLite
    uv run python -m bench.bench_sequencer --postgres postgresql://postgres@127.0.0.1:5432/test

The sequencer (server/audit/sequencer.py) runs in every serving process on SQLite, and in the active replica on
PostgreSQL, every ``audit.integration_interval_seconds`` (0.5 s). Under load each batch places the records the calls
committed since the last one; at rest it finds none, twice a second, for the life of the process. This appends
records as the call path does (``chain.append``, one transaction each), then times ``integrate_batch`` over them
with this process's CPU clock (``time.process_time``: every thread, so aiosqlite's and psycopg's work counts) and
the wall clock. Each batch is checked: the tree grew by exactly the records appended.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.bench_merkle import _audited
from bench.pg import reachable, scratch_schema
from server.audit.sequencer import integrate_batch
from server.storage.database import Database
from server.storage.schema import create_schema

BATCHES = (1, 50, 300, 2000)
"""Records per batch: a quiet server, and about 100, 600 and 4,000 calls a second at the 0.5 s interval."""


@contextlib.asynccontextmanager
async def _database(postgres: str | None) -> AsyncIterator[Database]:
    if postgres is None:
        with tempfile.TemporaryDirectory(prefix="mandate-bench-seq-") as scratch:
            db = Database(f"sqlite+aiosqlite:///{Path(scratch) / 'seq.db'}")
            try:
                await create_schema(db)
                yield db
            finally:
                await db.dispose()
        return
    with scratch_schema(postgres) as url:
        db = Database(url)
        try:
            await create_schema(db)
            yield db
        finally:
            await db.dispose()


async def _append(db: Database, count: int, start: int) -> None:
    for index in range(start, start + count):

        async def work(session: Any, index: int = index) -> str:
            return await _audited(session, index)

        await db.run_in_transaction(work)


async def measure(postgres: str | None, repeats: int, sizes: tuple[int, ...] = BATCHES) -> list[str]:
    lines = [
        f"engine: {'PostgreSQL' if postgres else 'SQLite'}; {repeats} batches of each size, medians",
        "",
        "| records in the batch | CPU per batch | CPU per record | wall per batch |",
        "| ---: | ---: | ---: | ---: |",
    ]
    async with _database(postgres) as db:
        appended = 0
        await _append(db, 10, appended)  # a tree head to build on, and warm statements
        appended += 10
        assert await integrate_batch(db, instance="bench") is not None
        for size in (0, *sizes):
            cpu: list[float] = []
            wall: list[float] = []
            for _ in range(repeats if size else repeats * 10):
                await _append(db, size, appended)
                appended += size
                started_cpu, started = time.process_time(), time.perf_counter()
                batch = await integrate_batch(db, instance="bench")
                cpu.append(time.process_time() - started_cpu)
                wall.append(time.perf_counter() - started)
                grew = 0 if batch is None else batch.new_size - batch.old_size
                assert grew == size, f"a batch placed {grew} of {size} records"
            per_batch = statistics.median(cpu) * 1e6
            per_record = f"{per_batch / size:,.1f} us" if size else ""
            lines.append(f"| {size:,} | {per_batch:,.0f} us | {per_record} | {statistics.median(wall) * 1e6:,.0f} us |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_sequencer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=None, help="measure on this PostgreSQL database instead of SQLite")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size", type=int, action="append", help=f"records a batch (repeatable; default {BATCHES})")
    args = parser.parse_args()
    if args.postgres is not None and not reachable(args.postgres):
        raise SystemExit(f"PostgreSQL is not reachable at {args.postgres}")
    for line in asyncio.run(measure(args.postgres, args.repeats, tuple(args.size or BATCHES))):
        print(line)


if __name__ == "__main__":
    main()
