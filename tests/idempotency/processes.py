"""Running worker processes (:mod:`tests.idempotency.worker`) against a test's database and releasing them at once."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from tests.conftest import Harness

ROOT = Path(__file__).resolve().parents[2]


async def _line(process: Process) -> str:
    assert process.stdout is not None
    buffer = ""
    async for chunk in TextReceiveStream(process.stdout):
        buffer += chunk
        if "\n" in buffer:
            return buffer
    raise AssertionError("the worker ended without answering")


async def race(harness: Harness, jobs: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Start one process per job (a list of calls: token, tool, arguments), release them together, collect answers."""
    settings = harness.mandate.settings
    processes: list[Process] = []
    try:
        for index, calls in enumerate(jobs):
            process = await anyio.open_process(
                [sys.executable, "-m", "tests.idempotency.worker"], cwd=ROOT, stderr=None
            )
            processes.append(process)
            assert process.stdin is not None
            job = {
                "name": f"p{index}",
                "data_dir": str(settings.data_dir),
                "database_url": settings.effective_database_url,
                "calls": calls,
            }
            await process.stdin.send((json.dumps(job) + "\n").encode())
        with anyio.fail_after(180):  # generous: each worker imports and opens the whole server on a loaded machine
            for process in processes:
                assert (await _line(process)).strip() == "ready"
            for process in processes:
                assert process.stdin is not None
                await process.stdin.send(b"go\n")
            answers = [json.loads(await _line(process)) for process in processes]
            for process in processes:
                assert await process.wait() == 0
        return answers
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
            await process.aclose()
