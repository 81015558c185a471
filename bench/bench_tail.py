"""Where a refund's tail comes from on SQLite: sequential latency, its distribution, the stalls, and what one refund
writes to the write-ahead log.

    uv run python -m bench.bench_tail                       # Mandate's refund_create and the bare same-write server
    uv run python -m bench.bench_tail --before /tmp/before  # and Mandate from another checkout, in the same run
    uv run python -m bench.bench_tail --calls 4000

Each side is a server process of its own (``bench.servers``), driven by one client making ``--calls`` sequential
refunds after a warm-up, side after side, in ``--rounds`` alternations. Printed per side: calls per second, mean,
p50, p90, p99 and the worst call; the share of all the time spent in calls slower than three times the median (the
stalls), and when the slowest calls happened (seconds into the round), so a period shows (a checkpoint every so
many commits, a background task every so many seconds). Then, in process, the WAL frames (pages) one Mandate refund
appends and what a checkpoint of 200 refunds costs (docs/decisions.md, "On SQLite the transaction's edges run there
too"). The servers are not pinned to CPUs: the figures are for reading a tail's shape, not a published ratio.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench.bench_refund import _op, _open
from bench.serve import SiteSpec
from bench.servers import running

PAGE_FRAME = 4096 + 24
"""One WAL frame: a 4 KiB page and its frame header (SQLite file format, "WAL file format")."""


@dataclass
class Tail:
    latencies: list[float]
    starts: list[float]
    seconds: float

    def line(self, name: str) -> str:
        xs = sorted(self.latencies)
        n = len(xs)
        p50 = xs[n // 2]
        slow = [x for x in xs if x > 3 * p50]
        worst = sorted(zip(self.latencies, self.starts, strict=True), reverse=True)[:8]
        when = ", ".join(f"{x * 1e3:.0f} ms @ {t:.2f} s" for x, t in sorted(worst, key=lambda v: v[1]))
        return (
            f"| {name} | {n / self.seconds:,.0f}/s | {statistics.mean(xs) * 1e3:.2f} ms | {p50 * 1e3:.2f} ms | "
            f"{xs[int(n * 0.9)] * 1e3:.2f} ms | {xs[int(n * 0.99)] * 1e3:.2f} ms | {xs[-1] * 1e3:.1f} ms | "
            f"{sum(slow) / sum(xs) * 100:.0f}% ({len(slow)}) | {when} |"
        )


async def _tail(spec: SiteSpec, calls: int, warmup: int) -> Tail:
    async with running([("site", spec)]) as sites:
        client = await _open(sites["site"])
        try:
            op = _op(client, True)
            for _ in range(warmup):
                await op()
            latencies, starts = [], []
            began = time.perf_counter()
            for _ in range(calls):
                start = time.perf_counter()
                await op()
                latencies.append(time.perf_counter() - start)
                starts.append(start - began)
            return Tail(latencies, starts, time.perf_counter() - began)
        finally:
            await client.close()


async def _wal_per_refund(workdir: Path, calls: int) -> tuple[float, float]:
    """WAL frames one refund appends, and the milliseconds a PASSIVE checkpoint of 200 refunds takes (in process)."""
    from server.storage import sqlite as mandate_sqlite

    every = mandate_sqlite.Checkpoints.EVERY
    mandate_sqlite.Checkpoints.EVERY = 10**9  # no checkpoint of Mandate's own while counting
    try:
        spec = SiteSpec("mandate_refund", 0, True, str(workdir / "wal"), 0, None, group="wal")
        async with running([("wal", spec)], in_process=True) as sites:
            client = await _open(sites["wal"])
            try:
                op = _op(client, True)
                for _ in range(50):
                    await op()
                database = next((workdir / "wal").rglob("mandate.db"))
                log = Path(f"{database}-wal")
                probe = sqlite3.connect(database)
                probe.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                before = os.path.getsize(log)  # noqa: ASYNC240 - between two measured calls
                for _ in range(calls):
                    await op()
                frames = (os.path.getsize(log) - before) / PAGE_FRAME / calls  # noqa: ASYNC240
                started = time.perf_counter()
                probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                checkpoint_ms = (time.perf_counter() - started) * 1e3 * 200 / calls
                probe.close()
                return frames, checkpoint_ms
            finally:
                await client.close()
    finally:
        mandate_sqlite.Checkpoints.EVERY = every


async def run(calls: int, rounds: int, before: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="mandate-tail-") as scratch:
        workdir = Path(scratch)
        sides = [("bare same-write", "bare_refund", ""), ("Mandate", "mandate_refund", "")]
        if before:
            sides.append(("Mandate (before)", "mandate_refund", before))
        print("| side | calls/s | mean | p50 | p90 | p99 | worst | time in calls > 3x p50 (count) | slowest |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for round_ in range(rounds):
            for name, kind, source in sides:
                group = f"{kind}-{round_}-{len(source)}"
                spec = SiteSpec(kind, 0, True, str(workdir / group), 0, None, group=group, source=source)
                print((await _tail(spec, calls, 200)).line(name), flush=True)
        frames, checkpoint_ms = await _wal_per_refund(workdir, 200)
        print(f"\nWAL per Mandate refund: {frames:.1f} frames; a PASSIVE checkpoint of 200: {checkpoint_ms:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_tail", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", default=None, help="also serve Mandate from this checkout (with this bench/)")
    args = parser.parse_args()
    uvloop.run(run(args.calls, args.rounds, args.before))


if __name__ == "__main__":
    main()
