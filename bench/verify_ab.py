"""Before and after a change to ``mandate audit verify``, in one alternating run over a kept log (issue 15).

Each run is ``verify_log`` over the whole log from one checkout, in a fresh process, B A A B B A ...; it prints the
wall time, the command's CPU and (PostgreSQL, same machine) the CPU of the server processes that served its
connections, read from ``/proc`` by ``application_name``. Build the log once with ``bench.bench_merkle``:

    uv run python -m bench.bench_merkle --seconds 0 --verify-records 1000000 --engines postgresql \\
        --postgres-schema pgv1m                                             # ~1.5 min; kept
    git archive main | tar -x -C /tmp/before && cp -r bench/. /tmp/before/bench/
    uv run python -m bench.verify_ab /tmp/before --postgres-schema pgv1m --rounds 4
    uv run python -m bench.verify_ab /tmp/before --sqlite-file /tmp/log1m.db --rounds 2
    uv run python -m bench.verify_ab . --postgres-schema pgv1m --workers 2,4    # one checkout, connection counts

Not a test: nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.pg import postgres_url_from_env

_RUN = """
import asyncio, contextlib, json, os, sys, uuid
from datetime import UTC, datetime
from pathlib import Path
sys.path.insert(0, {tree!r})
from server.audit.verify import verify_log
from server.storage.database import Database

def server_cpu(plain, application):
    import psycopg
    with psycopg.connect(plain, autocommit=True) as connection:
        query = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        pids = [row[0] for row in connection.execute(query, (application,))]
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{{pid}}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total

async def main():
    url, plain, workers = {url!r}, {plain!r}, {workers!r}
    application = "verify-ab-" + uuid.uuid4().hex[:8]
    if plain:
        url += "&application_name=" + application
    db = Database(url)
    load, before = os.getloadavg()[0], os.times()
    report = await verify_log(db, now=datetime(2025, 1, 1, tzinfo=UTC), workers=workers)
    after = os.times()
    assert report.ok, report.first_break
    server = server_cpu(plain, application) if plain else 0.0
    await db.dispose()
    cpu = sum(getattr(after, k) - getattr(before, k) for k in ("user", "system", "children_user", "children_system"))
    print(json.dumps({{"records": report.records, "wall": report.seconds, "cpu": cpu, "server_cpu": server,
                      "load": load, "utc": datetime.now(UTC).strftime("%H:%M:%S")}}))

if __name__ == "__main__":
    asyncio.run(main())
"""


def _once(tree: str, url: str, plain: str | None, workers: int | None) -> dict[str, float | str]:
    script = _RUN.format(tree=str(Path(tree).resolve()), url=url, plain=plain, workers=workers)
    for _ in range(3):  # a shared server can refuse a connection now and then ("too many clients")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)  # noqa: S603
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode == 0 and lines:
            result: dict[str, float | str] = json.loads(lines[-1])
            return result
    raise SystemExit(done.stderr[-2000:])


def main(args: argparse.Namespace) -> None:
    if args.sqlite_file:
        url, plain = f"sqlite+aiosqlite:///{Path(args.sqlite_file).resolve()}", None
    else:
        base = postgres_url_from_env()
        plain = base.replace("postgresql+psycopg://", "postgresql://").split("?")[0]
        search_path = f"?options=-csearch_path%3D{args.postgres_schema}"
        url = plain.replace("postgresql://", "postgresql+psycopg://") + search_path
    counts: list[int | None] = [int(count) for count in args.workers.split(",")] if args.workers else [None]
    sides = [(tree, count) for tree in ([args.before, "."] if args.before != "." else ["."]) for count in counts]
    results: dict[tuple[str, int | None], list[dict[str, float | str]]] = {side: [] for side in sides}
    print(f"load average at start: {' '.join(f'{value:.1f}' for value in os.getloadavg())}", flush=True)
    for round_number in range(args.rounds):
        for tree, count in sides if round_number % 2 == 0 else sides[::-1]:
            result = _once(tree, url, plain, count)
            results[(tree, count)].append(result)
            name = "after" if tree == "." else tree
            print(
                f"{result['utc']} {name} workers={count}: {float(result['wall']):.2f} s, command CPU "
                f"{float(result['cpu']):.2f} s, server CPU {float(result['server_cpu']):.2f} s, "
                f"load {float(result['load']):.1f}",
                flush=True,
            )
    for (tree, count), runs in results.items():
        walls = sorted(float(run["wall"]) for run in runs)
        servers = sorted(float(run["server_cpu"]) for run in runs)
        print(
            f"{'after' if tree == '.' else tree} workers={count}: wall {walls[0]:.2f}-{walls[-1]:.2f} s "
            f"(median {statistics.median(walls):.2f}), server CPU {servers[0]:.2f}-{servers[-1]:.2f} s",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="the other checkout (its bench/ copied from this one), or . for this alone")
    parser.add_argument("--postgres-schema", dest="postgres_schema", default="pgv1m")
    parser.add_argument("--sqlite-file", dest="sqlite_file", help="a kept SQLite log instead of PostgreSQL")
    parser.add_argument("--rounds", type=int, default=4, help="runs per side, in ABBA order")
    parser.add_argument("--workers", help="comma-separated connection (or process) counts; default: verify's own")
    main(parser.parse_args())
