"""Helpers for the operations tests: a policy with guard sections, a Mandate opened with it, answers read plainly."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mcp_types as types
from sqlalchemy import text

from scopes.policy import DEFAULT_POLICY
from server.app import open_mandate
from server.config import Settings
from tests.conftest import Harness
from tools.store.seed import seed_demo_store

REFUND = {"order_id": "ord_5001", "amount": "5.00", "currency": "EUR", "reason": "damaged"}
BIG_REFUND = {"order_id": "ord_5001", "amount": "150.00", "currency": "EUR", "reason": "damaged"}


def write_policy(folder: Path, extra: str) -> Path:
    """The default policy plus ``extra`` TOML (rate limits, breakers, approval limits)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "policy.toml"
    path.write_text(DEFAULT_POLICY.read_text() + "\n" + extra)
    return path


def steady_clock() -> Callable[[], datetime]:
    """A clock that starts at the first second of the current UTC hour and moves on with real time: every fixed
    window of an hour or less that divides the hour (``server.guards.store.window_of``) has just begun."""
    start = time.monotonic()
    anchor = datetime.now(UTC).replace(minute=0, second=1, microsecond=0)
    return lambda: anchor + timedelta(seconds=time.monotonic() - start)


@asynccontextmanager
async def guarded(settings: Settings, extra_policy: str = "", **changes: Any) -> AsyncIterator[Harness]:
    """A seeded Mandate (no transport) whose policy has ``extra_policy`` appended; its rate limits and breakers count
    on :func:`steady_clock`, so a test's calls never straddle the end of a fixed window."""
    update: dict[str, Any] = dict(changes)
    if extra_policy:
        update["policy_path"] = write_policy(settings.data_dir.parent / "policy", extra_policy)
    mandate = await open_mandate(settings.model_copy(update=update), local_dev_jwks=True)
    mandate.guards.rates.clock = mandate.guards.breakers.clock = steady_clock()
    try:
        await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, datetime.now(UTC)))
        yield Harness(mandate)
    finally:
        await mandate.aclose()


def body(result: types.CallToolResult) -> dict[str, Any]:
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def code(result: types.CallToolResult) -> str | None:
    value = body(result).get("code") if result.is_error else None
    return value if isinstance(value, str) else None


async def audit_rows(harness: Harness, where: str = "1=1", **params: Any) -> list[dict[str, Any]]:
    async with harness.mandate.db.session() as session:
        connection = await session.connection()
        found = await connection.execute(text(f"SELECT * FROM audit_records WHERE {where} ORDER BY seq"), params)  # noqa: S608
        return [dict(row._mapping) for row in found]
