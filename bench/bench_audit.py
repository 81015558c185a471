"""The audit trail's figures: what one record costs to write, and how fast ``mandate audit verify`` checks a chain.

    uv run python -m bench.bench_audit                      # SQLite, and PostgreSQL when reachable
    uv run python -m bench.bench_audit --records 200000 --rounds 7
    uv run python -m bench.bench_audit --no-postgres

Write cost, per engine, after a warm-up, as medians over ``--rounds`` rounds:

- *alone*: one record in a transaction of its own (``BEGIN``, lock the head, insert, move the head, ``COMMIT``),
  which is what a refused call or a listing costs;
- *in a transaction*: the marginal cost of the append inside a transaction that is committed anyway (what an
  allowed call adds to its effect's transaction), measured as 200 appends in one transaction.

Verify throughput: a chain of ``--records`` records (100,000 by default) is built with the real hash function and
bulk-inserted, then verified ``--rounds`` times after one warm-up run; the median records per second is printed.
Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bench.pg import postgres_url_from_env, reachable, scratch_schema
from server.audit import chain
from server.audit.models import AuditRecord
from server.audit.sequencer import integrate_batch
from server.audit.verify import verify_chain
from server.storage.database import Database
from server.storage.schema import create_schema

START = datetime(2025, 1, 1, tzinfo=UTC)


def record(index: int) -> AuditRecord:
    """A realistic record: an allowed refund with redacted arguments, a summary, a trace id."""
    return AuditRecord(
        seq=0,
        id=f"aud_{index:032x}",
        at=START + timedelta(milliseconds=index),
        instance="bench-host:4242",
        kind="call",
        subject=f"agent:refunds-{index % 17}",
        client_id=f"refunds-agent-{index % 17}",
        issuer="https://auth.example.com/",
        scopes="customers:read orders:read refunds:create",
        token_id=f"jti-{index:020d}",
        tenant="acme",
        transport="http",
        client_address="10.0.0.7",
        client_name="claude-desktop",
        client_version="1.2.3",
        tool="refund_create",
        customer_id=f"cus_{1000 + index % 500}",
        arguments='{"amount":"12.50","currency":"EUR","order_id":"ord_5001","reason":"[redacted]"}',
        arguments_digest="9f" * 32,
        decision="allow",
        policy_version="policy-2025-01-01",
        outcome="succeeded",
        result_summary='{"amount":"12.50","currency":"EUR","order_id":"ord_5001","refund_id":"ref_0123456789abcdef"}',
        latency_us=1234,
        idempotency_key=f"idem-{index:016d}",
        request_id=str(index),
        trace_id=f"{index:032x}",
        prev_hash="",
        hash="",
    )


async def _fresh(url: str) -> Database:
    db = Database(url)
    await create_schema(db)
    return db


async def write_alone(db: Database, count: int, offset: int) -> float:
    """Seconds per record, each record in a transaction of its own."""
    started = time.perf_counter()
    for index in range(offset, offset + count):
        entry = record(index)

        async def work(session: AsyncSession, entry: AuditRecord = entry) -> AuditRecord:
            return await chain.append(session, entry)

        await db.run_in_transaction(work)
    return (time.perf_counter() - started) / count


async def round_trip(db: Database, count: int) -> float:
    """Seconds per ``SELECT 1`` on an open connection: the floor under every statement of an append."""
    async with db.engine.connect() as connection:
        started = time.perf_counter()
        for _ in range(count):
            await connection.execute(select(1))
        return (time.perf_counter() - started) / count


async def write_in_transaction(db: Database, count: int, offset: int) -> float:
    """Seconds per record, ``count`` appends in one transaction (the marginal cost inside an effect's transaction)."""

    async def work(session: AsyncSession) -> None:
        for index in range(offset, offset + count):
            await chain.append(session, record(index))

    started = time.perf_counter()
    await db.run_in_transaction(work)
    return (time.perf_counter() - started) / count


async def bulk_chain(db: Database, count: int, batch: int = 5000) -> None:
    """Insert ``count`` records with their real leaf hashes, fast (executemany, no ORM), and integrate them."""
    next_seq = 0
    if db.is_sqlite:  # SQLite has no identity column: seq is MAX(seq) + 1 under its one writer (server.audit.chain)
        async with db.engine.connect() as connection:
            next_seq = (
                int((await connection.execute(select(func.coalesce(func.max(chain.RECORDS.c.seq), 0)))).scalar_one())
                + 1
            )
    for start in range(0, count, batch):
        rows: list[dict[str, Any]] = []
        for index in range(start, min(start + batch, count)):
            values = chain.record_values(record(10_000_000 + index))
            del values["seq"]
            if db.is_sqlite:
                values["seq"] = next_seq + index
            values["prev_hash"] = values["hash"] = values["leaf_index"] = None
            values["leaf_hash"] = chain.leaf_hash_of(values).hex()
            rows.append(values)
        async with db.engine.begin() as connection:
            await connection.execute(chain.RECORDS.insert(), rows)
    while await integrate_batch(db, instance="bench", batch_size=50_000):
        pass


def _median_us(values: list[float]) -> float:
    return statistics.median(values) * 1_000_000


@dataclass(frozen=True)
class Sizes:
    """How much one engine's run measures."""

    records: int = 100_000
    rounds: int = 5
    warmup: int = 200
    alone: int = 500
    inside: int = 200
    trips: int = 200


SIZES = {
    "full": Sizes(records=100_000, rounds=3),
    "quick": Sizes(records=10_000, rounds=1, warmup=50, alone=100, inside=100, trips=50),
    "smoke": Sizes(records=300, rounds=1, warmup=5, alone=10, inside=10, trips=10),
}


async def bench_engine(name: str, url: str, sizes: Sizes, *, quiet: bool = False) -> dict[str, float]:
    db = await _fresh(url)
    try:
        offset = 0
        await write_alone(db, sizes.warmup, offset)  # warm-up: connections, statement caches, the file
        offset += sizes.warmup
        alone, inside, trips = [], [], []
        for _ in range(sizes.rounds):
            trips.append(await round_trip(db, sizes.trips))
            alone.append(await write_alone(db, sizes.alone, offset))
            offset += sizes.alone
            inside.append(await write_in_transaction(db, sizes.inside, offset))
            offset += sizes.inside
        await bulk_chain(db, sizes.records)
        report = await verify_chain(db)  # warm-up, and a check that the chain is whole
        assert report.ok, report.first_break
        rates = []
        for _ in range(sizes.rounds):
            report = await verify_chain(db)
            rates.append(report.rate)
        figures = {
            "round_trip_us": _median_us(trips),
            "append_alone_us": _median_us(alone),
            "append_in_transaction_us": _median_us(inside),
            "verify_records": float(report.records),
            "verify_records_per_s": statistics.median(rates),
            "verify_seconds": report.records / statistics.median(rates),
        }
    finally:
        await db.dispose()
    if not quiet:
        print(
            f"{name:<10}  write alone {figures['append_alone_us']:8.0f} us/record   "
            f"in a transaction {figures['append_in_transaction_us']:6.0f} us/record   "
            f"verify {figures['verify_records_per_s']:9,.0f} records/s "
            f"({int(figures['verify_records']):,} records in {figures['verify_seconds']:.2f} s)   "
            f"[a bare SELECT 1 round trip: {figures['round_trip_us']:.0f} us]",
            flush=True,
        )
    return figures


def _rows(engine: str, label: str, figures: dict[str, float]) -> dict[str, Any]:
    records = int(figures["verify_records"])
    return {
        f"audit.append.{engine}": (
            1_000_000 / figures["append_alone_us"],
            "records/s",
            f"audit records written per second, one record per transaction, {label}",
        ),
        f"audit.append_in_transaction.{engine}": (
            figures["append_in_transaction_us"],
            "us",
            f"audit record appended inside a call's transaction (marginal cost), {label}",
        ),
        f"audit.verify.{engine}": (
            figures["verify_records_per_s"],
            "records/s",
            f"audit verify over {records:,} records, {label}",
        ),
    }


async def run(*, mode: str) -> dict[str, Any]:
    """The hook ``python -m bench`` calls (bench/hooks.py): SQLite always, PostgreSQL on full runs when reachable."""
    sizes = SIZES[mode]
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mandate-bench-audit-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'audit.db'}"
        figures.update(_rows("sqlite", "SQLite WAL", await bench_engine("sqlite", url, sizes, quiet=True)))
    postgres = postgres_url_from_env()
    if mode == "full" and reachable(postgres):
        with scratch_schema(postgres) as schema_url:
            measured = await bench_engine("postgresql", schema_url, sizes, quiet=True)
        figures.update(_rows("postgres", "PostgreSQL", measured))
    else:
        figures["audit.postgres"] = "PostgreSQL: skipped (full runs only, and PostgreSQL must be reachable)"
    return figures


@contextmanager
def _postgres(url: str | None) -> Iterator[str | None]:
    if url is None or not reachable(url):
        yield None
        return
    with scratch_schema(url) as schema_url:
        yield schema_url


async def main(args: argparse.Namespace) -> None:
    sizes = Sizes(records=args.records, rounds=args.rounds)
    print(f"audit trail: {args.records:,} records to verify, medians over {args.rounds} rounds after a warm-up")
    with tempfile.TemporaryDirectory(prefix="mandate-bench-audit-") as scratch:
        await bench_engine("sqlite", f"sqlite:///{Path(scratch) / 'audit.db'}", sizes)
    postgres = None if args.no_postgres else (args.postgres or postgres_url_from_env())
    with _postgres(postgres) as schema_url:
        if schema_url is None:
            print(f"postgresql  skipped (not reachable at {postgres})" if postgres else "postgresql  skipped")
        else:
            await bench_engine("postgresql", schema_url, sizes)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records in the chain to verify (100,000)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds after the warm-up (5)")
    parser.add_argument("--postgres", help="PostgreSQL URL (default: POSTGRES_URL, MANDATE_TEST_DATABASE_URL or local)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
