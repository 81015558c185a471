"""A separate server process for multi-process tests: ``python -m tests.idempotency.worker`` reads a JSON job on
stdin, opens Mandate on the job's database (the same SQLite file or PostgreSQL schema as the test), prints ``ready``,
waits for ``go`` on stdin, makes its calls concurrently through the enforcer, and prints their answers as JSON.

Every worker of a test is released at the same moment, so their calls really race, across processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio

from server.app import open_mandate
from server.callpath.record import CallInfo
from server.config import Settings


async def main() -> None:
    job: dict[str, Any] = json.loads(sys.stdin.readline())
    settings = Settings(
        data_dir=Path(job["data_dir"]),
        database_url=job["database_url"],
        dev_issuer=True,
        port=8000,
        instance=f"worker-{job['name']}",
    )
    mandate = await open_mandate(settings, local_dev_jwks=True)
    try:
        calls = [(await mandate.verifier.verify(call["token"]), call) for call in job["calls"]]
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        answers: list[dict[str, Any]] = [{} for _ in calls]

        async def one(index: int) -> None:
            principal, call = calls[index]
            info = CallInfo(transport="worker", request_id=f"{job['name']}-{index}")
            result = await mandate.enforcer.call_tool(principal, call["tool"], call["arguments"], info)
            answers[index] = {"is_error": bool(result.is_error), "body": result.structured_content}

        async with anyio.create_task_group() as group:
            for index in range(len(calls)):
                group.start_soon(one, index)
        print(json.dumps(answers), flush=True)
    finally:
        await mandate.aclose()


if __name__ == "__main__":
    anyio.run(main)
