"""Ledger reservations per second with 32 concurrent writers, and the check that a cumulative cap held.

Each reservation is what an allowed call does to the ledger, through the server's own code and transaction
discipline: ``Database.run_in_transaction`` (``BEGIN IMMEDIATE`` on SQLite; row locks and retries on PostgreSQL),
``server.ledger.totals`` (creates the day's bucket if missing and reads it locked), the check against the cap (what
the decision does), then ``server.ledger.reserve`` (the conditional ``UPDATE ... WHERE spent + :x <= :cap`` and
the ledger entry). No tool, no audit record: the ledger alone.

Two phases per engine: a rate phase under a cap that is never reached, and a cap phase where 32 writers race for a
small cap until every one of them is refused; afterwards the bucket's total, the sum of its entries and the number
of successful reservations must all equal the cap exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.pg import postgres_url_from_env, reachable, scratch_schema

WRITERS = 32
SETTINGS = {"full": (3.0, 600), "quick": (0.5, 100), "smoke": (0.1, 5)}


@contextlib.asynccontextmanager
async def _database(url: str) -> AsyncIterator[Any]:
    import server.ledger  # noqa: F401 - declares the ledger tables
    from server.storage.database import Database
    from server.storage.schema import create_schema

    db = Database(url, pool_size=WRITERS)
    try:
        await create_schema(db)
        yield db
    finally:
        await db.dispose()


async def _reserve_once(db: Any, key: Any, cap: int, now: datetime) -> bool:
    from scopes.policy.results import Spend
    from server import ledger

    async def work(session: Any) -> bool:
        usage = await ledger.totals(session, [key], at=now, lock=True)
        spent = usage[key.budget]
        if not isinstance(spent, int) or spent + 1 > cap:  # a count budget reads as an int
            return False
        await ledger.reserve(session, [Spend(key, 1, cap)], at=now, audit_id=f"aud_{uuid.uuid4().hex}", tool="bench")
        return True

    result: bool = await db.run_in_transaction(work)
    return result


def _key(budget: str) -> Any:
    from scopes.policy.limits import COUNT
    from scopes.policy.results import LedgerKey

    return LedgerKey(
        budget=budget, key="bench|bench-agent|agent:bench", unit=COUNT, window=datetime.now(UTC).date().isoformat()
    )


async def _rate(db: Any, seconds: float) -> float:
    key = _key("bench_rate")
    now = datetime.now(UTC)
    await _reserve_once(db, key, 10**12, now)
    done = 0
    stop = time.perf_counter() + seconds

    async def writer() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await _reserve_once(db, key, 10**12, now)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    return done / (time.perf_counter() - started)


async def _cap_holds(db: Any, cap: int) -> tuple[bool, str]:
    from sqlalchemy import func
    from sqlmodel import col, select

    from server.ledger import LedgerBucket, LedgerEntry

    key = _key("bench_cap")
    now = datetime.now(UTC)
    granted = 0
    refused = 0

    async def writer() -> None:
        nonlocal granted, refused
        while True:
            if await _reserve_once(db, key, cap, now):
                granted += 1
            else:
                refused += 1
                return

    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    async with db.session() as session:
        spent = (await session.exec(select(LedgerBucket.spent).where(col(LedgerBucket.budget) == "bench_cap"))).one()
        entries = (
            await session.exec(select(func.sum(LedgerEntry.amount)).where(col(LedgerEntry.budget) == "bench_cap"))
        ).one()
    held = spent == entries == granted == cap
    return held, f"cap {cap}: {granted} granted, {refused} refused, bucket total {spent}, entries total {entries}"


async def _engine(url: str, mode: str) -> tuple[float, bool, str]:
    seconds, cap = SETTINGS[mode]
    async with _database(url) as db:
        rate = await _rate(db, seconds)
        held, detail = await _cap_holds(db, cap)
    return rate, held, detail


async def run(*, mode: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mandate-ledger-") as scratch:
        url = f"sqlite+aiosqlite:///{Path(scratch) / 'ledger.db'}"
        rate, held, detail = await _engine(url, mode)
    label = f"ledger reservations, {WRITERS} concurrent writers, SQLite WAL"
    figures["ledger.reserve.sqlite.c32"] = (rate, "reservations/s", label)
    figures["ledger.cap_held.sqlite"] = ("yes: " if held else "NO, OVERSPENT: ") + detail
    postgres = postgres_url_from_env()
    if mode == "full" and reachable(postgres):
        with scratch_schema(postgres) as schema_url:
            rate, held, detail = await _engine(schema_url, mode)
        label = f"ledger reservations, {WRITERS} concurrent writers, PostgreSQL"
        figures["ledger.reserve.postgres.c32"] = (rate, "reservations/s", label)
        figures["ledger.cap_held.postgres"] = ("yes: " if held else "NO, OVERSPENT: ") + detail
    else:
        figures["ledger.reserve.postgres.c32"] = "skipped (full runs only, and PostgreSQL must be reachable)"
    return figures
