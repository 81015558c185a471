"""The Merkle audit log: audited calls per second on PostgreSQL against the same inserts without the log, the
integration lag under that load, proof generation over a large tree, and ``verify`` over a large log on SQLite and
PostgreSQL (docs/audit.md; issue 15).

    uv run python -m bench.bench_merkle --verify-records 0       # the issue's table only: writers 1, 4, 16, 32
    uv run python -m bench.bench_merkle --seconds 0 --verify-records 1000000    # proofs and verify at 1,000,000
    uv run python -m bench.bench_merkle --seconds 0 --verify-records 1000000 \
        --sqlite-file /tmp/log1m.db --postgres-schema bench_log1m            # build once, reuse on the next runs

The table (``--seconds`` per writer count, split in ``--rounds`` slices per side), on a fresh schema, with the real
sequencer integrating every 0.5 s all along and signing each tree head. The sequencer runs in a process of its own
(``--sequencer process``, the default), as the active sequencer of a replica that is not also this bench's load
generator: the writers here are 32 tasks on one event loop, saturating it, and a sequencer on that loop waits a full
turn of it at every statement (``--sequencer here`` measures that too). Each writer count alternates, ABBA, so a
change in the machine's load falls on both sides:

- *plain*: each transaction inserts the same record into ``bench_plain`` (``LIKE audit_records INCLUDING ALL``:
  the same columns, identity and indexes, no triggers, no leaf hash), through the same prepared, queued insert
  that ``chain.append`` uses, so both sides' transactions take the same round trips: the floor;
- *audited*: each transaction appends through ``server.audit.chain.append`` (leaf hash, triggers).

The integration lag, two ways. *From commit*: each audited writer notes when its commit returned; afterwards each
record's integration time is that of the first tree head covering its leaf (``created_at``, written by the batch
that placed it): the sequencer's own share, exact. *From the call's start*: a monitor samples the age of the oldest
unintegrated record by its ``at`` every 0.1 s, through the load and until everything written is integrated; that
adds the transaction's own time, which at 32 writers on a loaded machine is a few hundred milliseconds. It prints as
a Markdown table, with the load average.

Then, per engine (``--engines``), a log of ``--verify-records`` records is bulk-written (:mod:`bench.bulk_log`: real
leaf hashes, no positions), integrated by the real sequencer in large batches, 200 inclusion and consistency proofs
are timed against its tree, and ``verify_log`` recomputes it, reporting wall time and the CPU time of this process,
its worker processes and (PostgreSQL) the server processes that served it. ``--sqlite-file`` and
``--postgres-schema`` keep the log built for the next run (setup writes a million rows: minutes). Not a test:
nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Iterator, Sequence
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
from server.audit.tree import HEADS, consistency_proof, inclusion_proof, latest_head
from server.audit.verify import verify_log
from server.storage.database import Database
from server.storage.prepared import Prepared, defer
from server.storage.schema import create_schema

WRITERS = (1, 4, 16, 32)


async def _writers(
    db: Database, count: int, seconds: float, work: Any, committed: dict[str, datetime] | None = None
) -> tuple[int, float]:
    """Transactions done by ``count`` concurrent writers in about ``seconds``, and the time they took. A ``work``
    that returns a record id has the moment its commit returned noted in ``committed``."""
    done = 0
    stop = time.perf_counter() + seconds

    async def writer(offset: int) -> None:
        nonlocal done
        index = offset
        while time.perf_counter() < stop:
            written: Any = await db.run_in_transaction(lambda session, i=index: work(session, i))
            if committed is not None and isinstance(written, str):
                committed[written] = datetime.now(UTC)
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


async def _audited(session: AsyncSession, index: int) -> str:
    """An audited call's record, appended as the call path appends it (column values, queued with the COMMIT)."""
    values = chain.record_values(_fresh_record(index))
    await chain.append(session, values)
    return str(values["id"])


def _plain_work(plain: Table) -> Any:
    """The floor: the same record inserted the way ``chain.append`` inserts it (a prepared statement, queued and sent
    with the transaction's COMMIT), minus the log: no leaf hash computed, no triggers."""
    statement = Prepared(insert(plain))

    async def work(session: AsyncSession, index: int) -> None:
        values = chain.record_values(_fresh_record(index))
        del values["seq"]
        values["leaf_hash"] = "00" * 32
        await defer(session, statement, values, expect=1)

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


async def _lag_from_commit(db: Database, committed: dict[str, datetime]) -> list[float]:
    """Seconds from each record's commit to the tree head that first covered its leaf."""
    async with db.engine.connect() as connection:
        heads = (await connection.execute(select(HEADS.c.size, HEADS.c.created_at).order_by(HEADS.c.size))).all()
        placed = (await connection.execute(select(chain.RECORDS.c.id, chain.RECORDS.c.leaf_index))).all()
    sizes = [int(size) for size, _ in heads]
    lags = []
    for record_id, leaf_index in placed:
        at = committed.get(str(record_id))
        if at is not None and leaf_index is not None:
            covering = heads[bisect.bisect_right(sizes, int(leaf_index))]
            lags.append((covering[1] - at).total_seconds())
    return lags


def _p95(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else max(values, default=0)


@contextlib.asynccontextmanager
async def _sequencer(db: Database, url: str, where: str) -> AsyncIterator[None]:
    """The real sequencer, every 0.5 s, signing: in this process's event loop, or in a process of its own."""
    if where == "here":
        sequencer = Sequencer(db, instance="bench", key=Ed25519PrivateKey.generate(), interval=0.5)
        async with sequencing(sequencer):
            await sequencer.activated.wait()
            yield
        return
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bench_merkle", "--sequence-only", url, stdin=PIPE, stdout=PIPE
    )
    assert child.stdout is not None
    assert child.stdin is not None
    try:
        if (await child.stdout.readline()).strip() != b"active":
            raise SystemExit("the sequencer process did not become active")
        yield
    finally:
        child.stdin.close()  # it steps down and exits when its input ends
        await child.wait()


async def sequence_only(url: str) -> None:
    """``--sequence-only``: be the active sequencer of ``url`` until standard input ends."""
    db = Database(url)
    sequencer = Sequencer(db, instance="bench-sequencer", key=Ed25519PrivateKey.generate(), interval=0.5)
    async with sequencing(sequencer):
        await sequencer.activated.wait()
        print("active", flush=True)
        await asyncio.to_thread(sys.stdin.buffer.read)
    await db.dispose()


async def throughput(
    url: str, seconds: float, writers: Sequence[int] = WRITERS, rounds: int = 2, where: str = "process"
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
    async with _sequencer(db, url, where):
        for count in writers:
            totals = {name: [0, 0.0] for name in sides}
            samples: list[float] = []
            committed: dict[str, datetime] = {}
            stop = asyncio.Event()
            monitor = asyncio.create_task(_lag_monitor(db, samples, stop))
            load = os.getloadavg()[0]
            for round_number in range(rounds):
                order = ("plain", "audited") if round_number % 2 == 0 else ("audited", "plain")
                for name in order:
                    done, took = await _writers(db, count, seconds / rounds, sides[name], committed)
                    totals[name][0] += done
                    totals[name][1] += took
            await _drained(db)  # the lag after the load counts too
            stop.set()
            await monitor
            lags = await _lag_from_commit(db, committed)
            floor, audited = (totals[name][0] / totals[name][1] for name in ("plain", "audited"))
            row = {
                "writers": count,
                "plain": floor,
                "audited": audited,
                "ratio": audited / floor,
                "commit_lag_p95": _p95(lags),
                "commit_lag_max": max(lags, default=0.0),
                "lag_p95": _p95(samples),
                "lag_max": max(samples),
                "load": load,
            }
            rows.append(row)
            print(
                f"| {count} | {floor:.0f} | {audited:.0f} | {audited / floor:.2f} | {row['commit_lag_p95']:.2f} s | "
                f"{row['commit_lag_max']:.2f} s | {row['lag_p95']:.2f} s | {row['lag_max']:.2f} s | {load:.1f} |",
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


async def _built(db: Database, records: int) -> bool:
    """Whether the log already holds ``records`` integrated records (a kept log from an earlier run)."""
    async with db.engine.connect() as connection:
        head = await latest_head(connection)
    return head is not None and head.size == records


def _server_cpu(url: str, application: str) -> float:
    """CPU seconds of the PostgreSQL server processes serving connections named ``application`` (same machine)."""
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://").split("?")[0]
    with psycopg.connect(plain, autocommit=True) as connection:
        pids = [
            row[0]
            for row in connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application,)
            )
        ]
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


async def verify_large(url: str, records: int) -> dict[str, Any]:
    """Bulk-write ``records`` records (unless the log is kept from an earlier run), integrate them with the real
    sequencer, time proofs and ``verify``."""
    db = Database(url)
    await create_schema(db)
    engine = "SQLite" if db.is_sqlite else "PostgreSQL"
    if await _built(db, records):
        print(f"{engine}: reusing the log of {records:,} records already built", flush=True)
    else:
        started = time.perf_counter()
        if db.is_sqlite:
            await asyncio.to_thread(bulk_log.write_sqlite, url, records)
        else:
            async with db.engine.connect() as connection:
                raw = await connection.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                await bulk_log.write_postgres(driver, records)
                await driver.commit()
        written = time.perf_counter() - started
        started = time.perf_counter()
        while await integrate_batch(db, instance="bench", batch_size=100_000):
            pass
        integrated = time.perf_counter() - started
        print(f"{engine}: wrote {records:,} records in {written:.1f} s; integrated in {integrated:.1f} s", flush=True)
    proof_figures = await proofs(db, 200)
    await db.dispose()
    application = f"bench-verify-{uuid.uuid4().hex[:8]}"
    separator = "&" if "?" in url else "?"
    verifier = Database(url if db.is_sqlite else f"{url}{separator}application_name={application}")
    load_before = os.getloadavg()[0]
    children = os.times()
    report = await verify_log(verifier, now=bulk_log.START)
    after = os.times()
    assert report.ok, report.first_break
    cpu = (after.user - children.user) + (after.children_user - children.children_user)
    cpu += (after.system - children.system) + (after.children_system - children.children_system)
    server = 0.0 if db.is_sqlite else _server_cpu(url, application)
    await verifier.dispose()
    where = "in this process and its workers" if db.is_sqlite else f"in this process, {server:.1f} s in the server's"
    print(
        f"{engine}: verify over {report.records:,} records: {report.seconds:.1f} s ({report.rate:,.0f} records/s; "
        f"{cpu:.1f} s CPU {where}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)",
        flush=True,
    )
    return {
        "engine": engine,
        "records": records,
        "verify_seconds": report.seconds,
        "cpu": cpu,
        "server_cpu": server,
        **proof_figures,
    }


@contextlib.contextmanager
def _kept_schema(url: str, schema: str) -> Iterator[str]:
    """A schema kept across runs (created when absent); yields the URL whose connections use it."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    separator = "&" if "?" in url else "?"
    yield f"{url}{separator}options=-csearch_path%3D{schema}"


async def main(args: argparse.Namespace) -> None:
    if args.sequence_only:
        await sequence_only(args.sequence_only)
        return
    print(f"load average at start: {' '.join(f'{value:.1f}' for value in os.getloadavg())}", flush=True)
    url = postgres_url_from_env()
    engines = set(args.engines.split(","))
    if "postgresql" in engines and not reachable(url):
        raise SystemExit(f"PostgreSQL not reachable at {url}")
    if args.seconds > 0 and "postgresql" in engines:
        print(f"sequencer: {'in a process of its own' if args.sequencer == 'process' else 'in the writers loop'}")
        print(
            "| writers | plain inserts/s | audited calls/s | ratio | lag from commit p95 | max "
            "| age from the call's start p95 | max | load |",
            flush=True,
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
        with scratch_schema(url) as scoped:
            writers = [int(count) for count in args.writers.split(",")]
            await throughput(scoped, args.seconds, writers, args.rounds, args.sequencer)
    if args.verify_records <= 0:
        return
    if "sqlite" in engines:
        if args.sqlite_file:
            await verify_large(f"sqlite+aiosqlite:///{args.sqlite_file}", args.verify_records)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-merkle-") as directory:
                await verify_large(f"sqlite+aiosqlite:///{Path(directory) / 'mandate.db'}", args.verify_records)
    if "postgresql" in engines:
        schema = _kept_schema(url, args.postgres_schema) if args.postgres_schema else scratch_schema(url)
        with schema as scoped:
            await verify_large(scoped, args.verify_records)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="per writer count and side; 0 skips the table")
    parser.add_argument("--writers", default=",".join(str(count) for count in WRITERS))
    parser.add_argument("--rounds", type=int, default=2, help="slices per side and writer count (ABBA order)")
    parser.add_argument(
        "--sequencer", choices=("process", "here"), default="process", help="where the sequencer runs for the table"
    )
    parser.add_argument("--verify-records", dest="verify_records", type=int, default=100_000, help="0 skips")
    parser.add_argument("--engines", default="sqlite,postgresql", help="verify on these (the table is PostgreSQL's)")
    parser.add_argument("--sqlite-file", dest="sqlite_file", help="keep the SQLite log here, reuse it when built")
    parser.add_argument("--postgres-schema", dest="postgres_schema", help="keep the PostgreSQL log in this schema")
    parser.add_argument("--sequence-only", dest="sequence_only", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.sqlite_file:
        arguments.sqlite_file = str(Path(arguments.sqlite_file).resolve())
    asyncio.run(main(arguments))
