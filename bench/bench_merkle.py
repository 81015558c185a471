"""The Merkle audit log on PostgreSQL: audited calls per second against the same inserts without the log, the
integration lag under that load, proof generation, and ``verify`` over a large log (docs/audit.md; issue 15).

    uv run python -m bench.bench_merkle                          # writers 1, 4, 16, 32; 4 s each; verify 100,000
    uv run python -m bench.bench_merkle --seconds 6 --verify-records 1000000

Each writer count runs twice, side by side in one run, on a fresh schema:

- *plain*: each transaction inserts the same record into ``bench_plain`` (``LIKE audit_records INCLUDING ALL``:
  the same columns, identity and indexes, no triggers, no leaf hash): the floor;
- *audited*: each transaction appends through ``server.audit.chain.append`` (leaf hash, triggers), with the real
  sequencer integrating in the same process every 0.5 s, as a serving replica does. A monitor samples the age of the
  oldest unintegrated record every 0.1 s: the integration lag.

Then ``--proofs`` inclusion and consistency proofs are generated against the tree, and a log of
``--verify-records`` records is bulk-written (real leaf hashes), integrated by the real sequencer in large batches,
and verified by ``verify_log``. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import MetaData, Table, func, insert, select, text
from sqlmodel.ext.asyncio.session import AsyncSession

from bench.bench_audit import record
from bench.pg import postgres_url_from_env, reachable, scratch_schema
from server.audit import chain
from server.audit.sequencer import Sequencer, integrate_batch, sequencing
from server.audit.tree import consistency_proof, inclusion_proof, latest_head
from server.audit.verify import verify_log
from server.storage.database import Database
from server.storage.schema import create_schema

WRITERS = (1, 4, 16, 32)


async def _writers(db: Database, count: int, seconds: float, work: Any) -> float:
    """Transactions per second with ``count`` concurrent writers for ``seconds``."""
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
    await asyncio.gather(*(writer(w * 10_000_000) for w in range(count)))
    return done / (time.perf_counter() - started)


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


async def throughput(url: str, seconds: float) -> list[dict[str, Any]]:
    db = Database(url, pool_size=40)
    await create_schema(db)
    async with db.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE bench_plain (LIKE audit_records INCLUDING ALL)"))
    plain = chain.RECORDS.to_metadata(MetaData(), name="bench_plain")
    rows = []
    sequencer = Sequencer(db, instance="bench", key=None, interval=0.5)
    for count in WRITERS:
        floor = await _writers(db, count, seconds, _plain_work(plain))
        samples: list[float] = []
        stop = asyncio.Event()
        async with sequencing(sequencer):
            monitor = asyncio.create_task(_lag_monitor(db, samples, stop))
            audited = await _writers(db, count, seconds, _audited)
            stop.set()
            await monitor
        rows.append(
            {
                "writers": count,
                "plain": floor,
                "audited": audited,
                "ratio": audited / floor,
                "lag_max": max(samples),
                "lag_p95": statistics.quantiles(samples, n=20)[-1] if len(samples) > 2 else max(samples),
            }
        )
        print(
            f"writers {count:>2}: plain {floor:7.0f}/s  audited {audited:7.0f}/s  ratio {audited / floor:4.2f}  "
            f"integration lag p95 {rows[-1]['lag_p95']:.2f} s, max {rows[-1]['lag_max']:.2f} s",
            flush=True,
        )
    while await integrate_batch(db, instance="bench"):
        pass
    await proofs(db, 200)
    await db.dispose()
    return rows


async def proofs(db: Database, count: int) -> None:
    async with db.engine.connect() as connection:
        head = await latest_head(connection)
        assert head is not None
        inclusion, consistency = [], []
        for _ in range(count):
            index = random.randrange(head.size)  # noqa: S311 - sampling, not secrets
            started = time.perf_counter()
            await inclusion_proof(connection, index, head.size)
            inclusion.append(time.perf_counter() - started)
            started = time.perf_counter()
            await consistency_proof(connection, random.randrange(1, head.size), head.size)  # noqa: S311
            consistency.append(time.perf_counter() - started)
    print(
        f"proofs over a tree of {head.size:,} leaves: inclusion median {statistics.median(inclusion) * 1000:.2f} ms, "
        f"consistency median {statistics.median(consistency) * 1000:.2f} ms",
        flush=True,
    )


async def verify_large(url: str, records: int) -> None:
    db = Database(url)
    await create_schema(db)
    started = time.perf_counter()
    base = datetime(2025, 1, 1, tzinfo=UTC)
    for start in range(0, records, 10_000):
        rows = []
        for index in range(start, min(start + 10_000, records)):
            entry = record(index)
            entry.at = base + timedelta(milliseconds=index)
            values = chain.record_values(entry)
            del values["seq"]
            if db.is_sqlite:  # no identity column on SQLite: positions are given, in a fresh database from 1
                values["seq"] = index + 1
            values["prev_hash"] = values["hash"] = values["leaf_index"] = None
            values["leaf_hash"] = chain.leaf_hash_of(values).hex()
            rows.append(values)
        async with db.engine.begin() as connection:
            await connection.execute(insert(chain.RECORDS), rows)
    written = time.perf_counter() - started
    started = time.perf_counter()
    while await integrate_batch(db, instance="bench", batch_size=50_000):
        pass
    integrated = time.perf_counter() - started
    print(f"wrote {records:,} records in {written:.1f} s; integrated in {integrated:.1f} s", flush=True)
    await proofs(db, 100)
    report = await verify_log(db, now=base)
    assert report.ok, report.first_break
    print(f"verify over {report.records:,} records: {report.seconds:.1f} s ({report.rate:,.0f} records/s)", flush=True)
    await db.dispose()


async def main(args: argparse.Namespace) -> None:
    url = postgres_url_from_env()
    if not reachable(url):
        raise SystemExit(f"PostgreSQL not reachable at {url}")
    with scratch_schema(url) as scoped:
        await throughput(scoped, args.seconds)
    with scratch_schema(url) as scoped:
        await verify_large(scoped, args.verify_records)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--verify-records", dest="verify_records", type=int, default=100_000)
    asyncio.run(main(parser.parse_args()))
