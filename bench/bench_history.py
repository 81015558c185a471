"""The cost of a rolling-window spend as history grows: 100, 1,000, 10,000 and 100,000 ledger entries in the window.

One holder of a ``rolling 30 days`` budget has ``n`` entries spread evenly over the last 30 days (written as rows,
with the sub-totals ``server.ledger`` keeps beside them). What is timed is the ledger's part of an allowed call,
through the server's own code and transaction: ``ledger.totals`` (the anchor row locked, the window's total read)
and ``ledger.reserve`` (the entry and its day and hour sub-totals), one ``Database.run_in_transaction``. Beside it,
in the same run and alternating with it, the statement the ledger used before the sub-totals: the per-entry
``SUM(amount) WHERE at > since`` over the same entries (the "before" column). SQLite always; PostgreSQL in full
runs when reachable.

    uv run python -m bench.bench_history            # full: 100 .. 100,000 entries, SQLite and PostgreSQL
    uv run python -m bench.bench_history --quick    # 100 .. 10,000, SQLite
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.pg import postgres_url_from_env, reachable, scratch_schema

SIZES = {"full": (100, 1_000, 10_000, 100_000), "quick": (100, 1_000, 10_000), "smoke": (100,)}
SAMPLES = {"full": 200, "quick": 60, "smoke": 3}
WINDOW = timedelta(days=30)


def _key(holder: str, since: datetime) -> Any:
    from scopes.policy.results import LedgerKey

    return LedgerKey("history_30d", holder, "EUR", "rolling", since)


async def _seed(db: Any, holder: str, count: int, now: datetime) -> None:
    """``count`` entries of one cent, evenly over the window (and the anchor row and sub-totals they imply)."""
    from sqlalchemy import insert

    from server import ledger

    step = (WINDOW - timedelta(minutes=1)) / count
    rows: list[dict[str, Any]] = []
    slots: dict[tuple[str, str, str, str], int] = {}
    for index in range(count):
        at = now - WINDOW + timedelta(minutes=1) + step * index
        rows.append(
            {
                "budget": "history_30d",
                "holder": holder,
                "unit": "EUR",
                "period": "rolling",
                "amount": 1,
                "at": at,
                "tool": "refund_create",
                "audit_id": uuid.uuid4().hex,
            }
        )
        for slot in ledger.slots_of(at):  # the same slot rule the ledger writes with
            slot_key = ("history_30d", holder, "EUR", slot)
            slots[slot_key] = slots.get(slot_key, 0) + 1
    async with db.engine.begin() as connection:
        for start in range(0, len(rows), 5_000):
            await connection.execute(insert(ledger.ENTRIES), rows[start : start + 5_000])
        totals = [
            {"budget": b, "holder": h, "unit": u, "slot": s, "spent": spent} for (b, h, u, s), spent in slots.items()
        ]
        await connection.execute(insert(ledger.WINDOW_TOTALS), totals)


async def _spend_once(db: Any, holder: str) -> None:
    from scopes.policy.results import Spend
    from server import ledger

    now = datetime.now(UTC)
    key = _key(holder, now - WINDOW)

    async def work(session: Any) -> None:
        await ledger.totals(session, [key], at=now, lock=True)
        await ledger.reserve(session, [Spend(key, 1, None)], at=now, audit_id=uuid.uuid4().hex, tool="refund_create")

    await db.run_in_transaction(work)


def _statements(holder: str) -> tuple[Any, dict[str, Any], Any, dict[str, Any]]:
    """The window's total as the ledger reads it now (sub-totals) and as it read it before (per entry)."""
    from sqlalchemy import bindparam, func, select

    from server import ledger
    from server.storage.types import UTCDateTime

    since = datetime.now(UTC) - WINDOW
    entries = ledger.ENTRIES
    per_entry = select(func.coalesce(func.sum(entries.c.amount), 0)).where(
        entries.c.budget == "history_30d",
        entries.c.holder == holder,
        entries.c.unit == "EUR",
        entries.c.at > bindparam("since", type_=UTCDateTime()),
    )
    now_params = ledger.window_params(_key(holder, since), since)
    return ledger.WINDOW_TOTAL, now_params, per_entry, {"since": since}


async def _median_us(operation: Any, samples: int) -> float:
    times: list[float] = []
    for _ in range(samples):
        started = time.perf_counter()
        await operation()
        times.append((time.perf_counter() - started) * 1e6)
    return statistics.median(times)


async def _timed_statements(db: Any, holder: str, count: int, per_round: int) -> tuple[float, float]:
    """The window-total statement now and before, each alone on one open connection, alternating (A B A B)."""
    window_total, now_params, per_entry_sum, before_params = _statements(holder)
    reads: list[float] = []
    per_entry: list[float] = []
    async with db.engine.connect() as connection:

        async def read() -> None:
            await connection.execute(window_total, now_params)

        async def summed() -> None:
            await connection.execute(per_entry_sum, before_params)

        now_total = (await connection.execute(window_total, now_params)).scalar_one()
        before_total = (await connection.execute(per_entry_sum, before_params)).scalar_one()
        if now_total != before_total:
            raise AssertionError(f"{count} entries: the sub-totals say {now_total}, the entries {before_total}")
        for _ in range(4):
            reads.append(await _median_us(read, per_round))
            per_entry.append(await _median_us(summed, per_round))
        await connection.rollback()
    return statistics.median(reads), statistics.median(per_entry)


async def _engine(url: str, mode: str) -> dict[int, tuple[float, float, float]]:
    import server.ledger  # noqa: F401 - declares the ledger tables
    from server.storage.database import Database
    from server.storage.schema import create_schema

    db = Database(url)
    curve: dict[int, tuple[float, float, float]] = {}
    per_round = max(1, SAMPLES[mode] // 4)
    try:
        await create_schema(db)
        now = datetime.now(UTC)
        for count in SIZES[mode]:
            holder = f"cus_{count}"
            await _seed(db, holder, count, now)

            async def spend(holder: str = holder) -> None:
                await _spend_once(db, holder)

            for _ in range(5):  # warm-up
                await spend()
            read, per_entry = await _timed_statements(db, holder, count, per_round)
            spends = [await _median_us(spend, per_round) for _ in range(4)]
            curve[count] = (statistics.median(spends), read, per_entry)
    finally:
        await db.dispose()
    return curve


def _figures(engine: str, curve: dict[int, tuple[float, float, float]]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for count, (spend, read, per_entry) in curve.items():
        prefix = f"ledger.history.{engine.lower()}.n{count}"
        figures[prefix] = (
            spend,
            "us",
            f"rolling-window spend (totals + reserve, one transaction), {count:,} entries in the window, {engine}",
        )
        figures[f"{prefix}.window_read"] = (
            read,
            "us",
            f"the window-total statement, sub-totals (now), {count:,} entries, {engine}",
        )
        figures[f"{prefix}.per_entry_sum"] = (
            per_entry,
            "us",
            f"the window-total statement, per entry (before), {count:,} entries, {engine}",
        )
    return figures


async def run(*, mode: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mandate-history-") as scratch:
        curve = await _engine(f"sqlite+aiosqlite:///{Path(scratch) / 'history.db'}", mode)
    figures.update(_figures("SQLite", curve))
    postgres = postgres_url_from_env()
    if mode == "full" and reachable(postgres):
        with scratch_schema(postgres) as schema_url:
            figures.update(_figures("PostgreSQL", await _engine(schema_url, mode)))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_history", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(run(mode="quick" if args.quick else "full"))
    print(
        "| entries in the window | engine | whole spend (now) | window total: sub-totals (now) | per entry (before) |"
    )
    print("| ---: | --- | ---: | ---: | ---: |")
    for engine in ("sqlite", "postgresql"):
        for count in SIZES["full"]:
            prefix = f"ledger.history.{engine}.n{count}"
            if prefix in figures:
                spend, read, per_entry = (
                    figures[f"{prefix}{part}"][0] for part in ("", ".window_read", ".per_entry_sum")
                )
                print(f"| {count:,} | {engine} | {spend:,.0f} us | {read:,.0f} us | {per_entry:,.0f} us |")


if __name__ == "__main__":
    main()
