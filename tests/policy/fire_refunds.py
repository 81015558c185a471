"""A helper process for the concurrency tests: fire refunds concurrently through the real Enforcer.

Run as ``python -m tests.policy.fire_refunds SPEC.json``. It opens the database named in the spec, prints ``ready``,
waits for a line on stdin (so several processes start firing together), fires every call at once, and prints one
JSON list of results. The principal is built as the token verifier would build it.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from scopes.policy import load_policy
from server.app import open_database
from server.auth.principal import Principal
from server.callpath.enforcer import Enforcer
from server.callpath.record import CallInfo
from server.config import Settings
from server.policy_runtime import StaticPolicy


async def main(spec_path: str) -> None:
    spec = json.loads(await anyio.Path(spec_path).read_text())
    settings = Settings(data_dir=Path(spec["data_dir"]), database_url=spec["database_url"], dev_issuer=True)
    db, catalog = await open_database(settings)
    try:
        policies = StaticPolicy(load_policy(Path(spec["policy_path"])))
        enforcer = Enforcer(db, catalog, instance=f"fire-{os.getpid()}", policies=policies)
        results: list[dict[str, Any]] = [{} for _ in spec["calls"]]

        async def fire(index: int, call: dict[str, Any]) -> None:
            principal = Principal(
                subject=call["agent"],
                client_id=f"{call['agent']}-client",
                scopes=frozenset({"refunds:create"}),
                issuer="https://issuer.test",
                audience=("https://mandate.test/mcp",),
                expires_at=datetime.now(UTC) + timedelta(minutes=5),
            )
            result = await enforcer.call_tool(principal, "refund_create", call["args"], CallInfo(transport="test"))
            body = result.structured_content or {}
            results[index] = {"amount": call["args"]["amount"], "ok": not result.is_error, "code": body.get("code")}

        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        async with anyio.create_task_group() as group:
            for index, call in enumerate(spec["calls"]):
                group.start_soon(fire, index, call)
        print(json.dumps(results), flush=True)
    finally:
        await db.dispose()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
