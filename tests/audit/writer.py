"""A separate process appending audit records: ``python -m tests.audit.writer DATABASE_URL TASKS RECORDS_PER_TASK``.

Used by the concurrency test to have writers in several processes at once, as several server replicas would.
"""

from __future__ import annotations

import sys

import anyio

from server.storage.database import Database
from tests.audit.support import append_records


async def _write(url: str, tasks: int, per_task: int) -> None:
    db = Database(url)
    try:
        async with anyio.create_task_group() as group:
            for task in range(tasks):
                group.start_soon(lambda task=task: append_records(db, per_task, start=task * 1000))
    finally:
        await db.dispose()


if __name__ == "__main__":
    anyio.run(_write, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
