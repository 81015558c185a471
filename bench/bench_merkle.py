"""The Merkle audit log: audited calls per second on PostgreSQL against the same inserts without the log, the
integration lag under that load, proof generation over a large tree, and ``verify`` over a large log on SQLite and
PostgreSQL (docs/audit.md; issue 15).

    uv run python -m bench.bench_merkle --verify-records 0       # the issue's table only: writers 1, 4, 16, 32
    uv run python -m bench.bench_merkle --seconds 0 --verify-records 1000000    # proofs and verify at 1,000,000

The table (``--seconds`` per writer count, split in ``--rounds`` slices per side), on a fresh schema, with the real
sequencer integrating in the same process every 0.5 s all along and signing each tree head, as a serving replica
does. Each writer count alternates, ABBA, so a change in the machine's load falls on both sides:

- *plain*: each transaction inserts the same record into ``bench_plain`` (``LIKE audit_records INCLUDING ALL``:
  the same columns, identity and indexes, no triggers, no leaf hash): the floor;
- *audited*: each transaction appends through ``server.audit.chain.append`` (leaf hash, triggers).

A monitor samples the age of the oldest unintegrated record every 0.1 s, through the load and until the sequencer
has integrated everything written: the integration lag. It prints as a Markdown table, with the load average.

Then, per engine (``--engines``), a log of ``--verify-records`` records is bulk-written (:mod:`bench.bulk_log`: real
leaf hashes, no positions), integrated by the real sequencer in large batches, 200 inclusion and consistency proofs
are timed against its tree, and ``verify_log`` recomputes it, reporting wall time and the CPU time of this process
and its worker processes. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import MetaData, Table, func, insert, select, text
from sqlmodel.ext.asyncio.session import AsyncSession

from bench import bulk_log
from bench.bench_audit import record
from bench.pg import postgres_url_from_env, reachable, scratch_schema
from server.audit import chain
from server.audit.sequencer import Sequencer, integrate_batch, sequencing
from server.audit.tree import consistency_proof, inclusion_proof, latest_head
from server.audit.verify import verify_log
from server.storage.database import Database
from server.storage.schema import create_schema

WRITERS = (1, 4, 16, 32)


async def _writers(db: Database, count: int, seconds: float, work: Any) -> tuple[int, float]:
    """Transactions done by ``count`` concurrent writers in about ``seconds``, and the time they took."""
    done = 0
    stop = time.perf_counter() + seconds

    async def writer(offset: int) -> None:
        nonlocal done
        index = offset
        while time.perf_counter() < stop:
            await db.run_in_transaction(lambda session, i=index: work(session, i))
            index += 1
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer(w * 10_000_000 + random.randrange(10_000_000)) for w in range(count)))  # noqa: S311
    return done, time.perf_counter() - started


def _fresh_record(index: int) -> Any:
    entry = record(index)
    entry.id = f"aud_{random.getrandbits(128):032x}"
    entry.at = datetime.now(UTC)
    return entry


async def _audited(session: AsyncSession, index: int) -> None:
    await chain.append(session, _fresh_record(index))


def _plain_work(plain: Table) -> Any:
    async def work(session: AsyncSession, index: int) -> None:
        values = chain.record_values(_fresh_record(index))
        del values["seq"]
        values["leaf_hash"] = "00" * 32
        connection = await session.connection()
        await connection.execute(insert(plain), values)

    return work


async def _lag_monitor(db: Database, samples: list[float], stop: asyncio.Event) -> None:
    query = select(func.min(chain.RECORDS.c.at)).where(chain.RECORDS.c.leaf_index.is_(None))
    while not stop.is_set():
        async with db.engine.connect() as connection:
            oldest = (await connection.execute(query)).scalar_one()
        samples.append((datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0)
        await asyncio.sleep(0.1)


async def _drained(db: Database) -> None:
    """Wait until the sequencer has integrated every record written so far."""
    query = select(func.count()).select_from(chain.RECORDS).where(chain.RECORDS.c.leaf_index.is_(None))
    while True:
        async with db.engine.connect() as connection:
            if not (await connection.execute(query)).scalar_one():
                return
        await asyncio.sleep(0.05)


async def throughput(
    url: str, seconds: float, writers: Sequence[int] = WRITERS, rounds: int = 2
) -> list[dict[str, Any]]:
    """The issue's table: for each writer count, plain inserts and audited appends in alternating slices (ABBA, so
    a change in the machine's load falls on both sides), with the real sequencer running all along."""
    db = Database(url, pool_size=40)
    await create_schema(db)
    async with db.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE bench_plain (LIKE audit_records INCLUDING ALL)"))
    plain = chain.RECORDS.to_metadata(MetaData(), name="bench_plain")
    sides = {"plain": _plain_work(plain), "audited": _audited}
    rows = []
    sequencer = Sequencer(db, instance="bench", key=Ed25519PrivateKey.generate(), interval=0.5)
    async with sequencing(sequencer):
        await sequencer.activated.wait()
        for count in writers:
            totals = {name: [0, 0.0] for name in sides}
            samples: list[float] = []
            stop = asyncio.Event()
            monitor = asyncio.create_task(_lag_monitor(db, samples, stop))
            load = os.getloadavg()[0]
            for round_number in range(rounds):
                order = ("plain", "audited") if round_number % 2 == 0 else ("audited", "plain")
                for name in order:
                    done, took = await _writers(db, count, seconds / rounds, sides[name])
                    totals[name][0] += done
                    totals[name][1] += took
            await _drained(db)  # the lag after the load counts too
            stop.set()
            await monitor
            floor, audited = (totals[name][0] / totals[name][1] for name in ("plain", "audited"))
            row = {
                "writers": count,
                "plain": floor,
                "audited": audited,
                "ratio": audited / floor,
                "lag_max": max(samples),
                "lag_p95": statistics.quantiles(samples, n=20, method="inclusive")[-1],
                "load": load,
            }
            rows.append(row)
            print(
                f"| {count} | {floor:.0f} | {audited:.0f} | {audited / floor:.2f} | {row['lag_p95']:.2f} s | "
                f"{row['lag_max']:.2f} s | {load:.1f} |",
                flush=True,
            )
    await proofs(db, 200)
    await db.dispose()
    return rows


async def proofs(db: Database, count: int) -> dict[str, float]:
    """Median and 95th percentile milliseconds of ``count`` inclusion and consistency proofs at random sizes."""
    async with db.engine.connect() as connection:
        head = await latest_head(connection)
        assert head is not None
        inclusion, consistency = [], []
        for _ in range(count):
            index = random.randrange(head.size)  # noqa: S311 - sampling, not secrets
            started = time.perf_counter()
            await inclusion_proof(connection, index, head.size)
            inclusion.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await consistency_proof(connection, random.randrange(1, head.size), head.size)  # noqa: S311
            consistency.append((time.perf_counter() - started) * 1000)
    figures = {
        "inclusion_p50_ms": statistics.median(inclusion),
        "inclusion_p95_ms": statistics.quantiles(inclusion, n=20)[-1],
        "consistency_p50_ms": statistics.median(consistency),
        "consistency_p95_ms": statistics.quantiles(consistency, n=20)[-1],
    }
    print(
        f"proofs over a tree of {head.size:,} leaves ({count} each): inclusion median "
        f"{figures['inclusion_p50_ms']:.2f} ms, p95 {figures['inclusion_p95_ms']:.2f} ms; consistency median "
        f"{figures['consistency_p50_ms']:.2f} ms, p95 {figures['consistency_p95_ms']:.2f} ms",
        flush=True,
    )
    return figures


async def verify_large(url: str, records: int) -> dict[str, Any]:
    """Bulk-write ``records`` records, integrate them with the real sequencer, time proofs and ``verify``."""
    db = Database(url)
    await create_schema(db)
    started = time.perf_counter()
    if db.is_sqlite:
        await asyncio.to_thread(bulk_log.write_sqlite, url, records)
    else:
        async with db.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            await bulk_log.write_postgres(raw.driver_connection, records)
            await raw.driver_connection.commit()
    written = time.perf_counter() - started
    started = time.perf_counter()
    while await integrate_batch(db, instance="bench", batch_size=100_000):
        pass
    integrated = time.perf_counter() - started
    engine = "SQLite" if db.is_sqlite else "PostgreSQL"
    print(f"{engine}: wrote {records:,} records in {written:.1f} s; integrated in {integrated:.1f} s", flush=True)
    proof_figures = await proofs(db, 200)
    load_before = os.getloadavg()[0]
    children = os.times()
    report = await verify_log(db, now=bulk_log.START)
    after = os.times()
    assert report.ok, report.first_break
    cpu = (after.user - children.user) + (after.children_user - children.children_user)
    cpu += (after.system - children.system) + (after.children_system - children.children_system)
    print(
        f"{engine}: verify over {report.records:,} records: {report.seconds:.1f} s ({report.rate:,.0f} records/s; "
        f"{cpu:.1f} s CPU in this process and its workers; load average {load_before:.1f} before)",
        flush=True,
    )
    await db.dispose()
    return {"engine": engine, "records": records, "verify_seconds": report.seconds, "cpu": cpu, **proof_figures}


async def main(args: argparse.Namespace) -> None:
    print(f"load average at start: {' '.join(f'{value:.1f}' for value in os.getloadavg())}", flush=True)
    url = postgres_url_from_env()
    engines = set(args.engines.split(","))
    if "postgresql" in engines and not reachable(url):
        raise SystemExit(f"PostgreSQL not reachable at {url}")
    if args.seconds > 0 and "postgresql" in engines:
        print("| writers | plain inserts/s | audited calls/s | ratio | integration lag p95 | max | load |", flush=True)
        print("| --- | --- | --- | --- | --- | --- | --- |", flush=True)
        with scratch_schema(url) as scoped:
            await throughput(scoped, args.seconds, [int(count) for count in args.writers.split(",")], args.rounds)
    if args.verify_records <= 0:
        return
    if "sqlite" in engines:
        with tempfile.TemporaryDirectory(prefix="bench-merkle-") as directory:
            await verify_large(f"sqlite+aiosqlite:///{Path(directory) / 'mandate.db'}", args.verify_records)
    if "postgresql" in engines:
        with scratch_schema(url) as scoped:
            await verify_large(scoped, args.verify_records)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="per writer count and side; 0 skips the table")
    parser.add_argument("--writers", default=",".join(str(count) for count in WRITERS))
    parser.add_argument("--rounds", type=int, default=2, help="slices per side and writer count (ABBA order)")
    parser.add_argument("--verify-records", dest="verify_records", type=int, default=100_000, help="0 skips")
    parser.add_argument("--engines", default="sqlite,postgresql", help="verify on these (the table is PostgreSQL's)")
    asyncio.run(main(parser.parse_args()))
