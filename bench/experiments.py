"""``python -m bench.experiments``: what each candidate fix in bench/patches.py gains, measured, not guessed.

Every experiment runs the bare server, Mandate as it is, and Mandate with the patch(es), alternating between them
(A B C A B C ...) on one figure, and prints the figures with their ratios to the bare server. "mandate" is the
server as it is (with the fixes already made); the patches are the candidates not made (docs/performance.md says
why, and quotes these numbers).

    uv run python -m bench.experiments             # every experiment (about a minute and a half)
    uv run python -m bench.experiments --quick
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench.bench_http import _call_op, _list_op
from bench.client import LEGACY, MODERN, RawMcpClient
from bench.harness import Operation, ab_latency, ab_throughput
from bench.serve import SiteSpec
from bench.servers import Site, can_pin, client_pinned, running


@dataclass(frozen=True)
class Experiment:
    name: str
    figure: str  # "call", "throughput", "list"
    variants: tuple[tuple[str, tuple[str, ...]], ...]  # (label, patches) for Mandate; the bare server is added
    tools: int = 50
    stateless: bool = True
    concurrency: int = 1
    why: str = ""


EXPERIMENTS = (
    Experiment(
        "surface",
        "call",
        (("mandate", ()), ("mandate, enforcer stubbed", ("stub-enforcer",))),
        why="where a stateless tools/call's time goes: Mandate's HTTP surface alone (the enforcer answers at once)",
    ),
    Experiment(
        "sqlite-inline",
        "call",
        (("mandate", ()), ("mandate + sqlite-inline", ("sqlite-inline",))),
        why="stateless tools/call: SQLite statements on the loop's thread instead of aiosqlite's worker thread",
    ),
    Experiment(
        "sqlite-inline-c8",
        "throughput",
        (("mandate", ()), ("mandate + sqlite-inline", ("sqlite-inline",))),
        concurrency=8,
        why="8 concurrent clients on SQLite, with and without the worker thread",
    ),
    Experiment(
        "list-1000",
        "list",
        (("mandate", ()), ("mandate + list-cache", ("list-cache",))),
        tools=1000,
        why="tools/list with 1,000 tools: answered from bytes serialised once per scope set",
    ),
    Experiment(
        "all-stateful",
        "call",
        (("mandate", ()), ("mandate + sqlite-inline", ("sqlite-inline",))),
        stateless=False,
        why="stateful session (2025-11-25): with and without the worker thread",
    ),
)


@contextlib.asynccontextmanager
async def _sites(experiment: Experiment, workdir: Path, pin: bool) -> AsyncIterator[dict[str, Site]]:
    def spec(kind: str, label: str, patches: tuple[str, ...]) -> tuple[str, SiteSpec]:
        folder = workdir / experiment.name / label.replace(" ", "").replace("+", "_")
        return label, SiteSpec(
            kind, experiment.tools, experiment.stateless, str(folder), 0, patches=patches, group=label
        )

    specs = [spec("bare", "bare", ())] + [spec("mandate", label, patches) for label, patches in experiment.variants]
    async with running(specs, pin=pin) as sites:
        yield sites


async def _clients(sites: dict[str, Site], count: int) -> dict[str, list[RawMcpClient]]:
    opened: dict[str, list[RawMcpClient]] = {}
    for name, site in sites.items():
        opened[name] = []
        for _ in range(count):
            client = RawMcpClient(
                site.host, site.port, token=site.token, protocol=MODERN if site.spec.stateless else LEGACY
            )
            await client.connect()
            opened[name].append(client)
    return opened


async def run_experiment(experiment: Experiment, workdir: Path, *, pin: bool, quick: bool) -> list[str]:
    lines = [f"## {experiment.name}: {experiment.why}"]
    async with _sites(experiment, workdir, pin) as sites:
        with client_pinned(pin):
            clients = await _clients(sites, max(1, experiment.concurrency))
            try:
                if experiment.figure == "throughput":
                    sides = {name: [_call_op(c) for c in group] for name, group in clients.items()}
                    measured = await ab_throughput(
                        sides, rounds=1 if quick else 3, seconds=1.0 if quick else 3.0, warmup_seconds=0.5
                    )
                    bare = measured.rate("bare")
                    for name in sites:
                        rate = measured.rate(name)
                        lines.append(f"| {name} | {rate:,.0f} calls/s | {rate / bare:.2f}x of bare |")
                else:
                    ops: dict[str, Operation] = {
                        name: (
                            _list_op(group[0], experiment.tools) if experiment.figure == "list" else _call_op(group[0])
                        )
                        for name, group in clients.items()
                    }
                    if experiment.figure == "list":
                        measured_l = await ab_latency(
                            ops, warmup=2, rounds=2 if quick else 5, per_round=3 if quick else 10
                        )
                    else:
                        measured_l = await ab_latency(
                            ops, warmup=100, rounds=4 if quick else 10, per_round=100 if quick else 300
                        )
                    bare_d = measured_l.sides["bare"]
                    for name in sites:
                        d = measured_l.sides[name]
                        lines.append(
                            f"| {name} | p50 {d.p(50):,.0f} us ({d.p(50) / bare_d.p(50):.2f}x) | "
                            f"p99 {d.p(99):,.0f} us ({d.p(99) / bare_d.p(99):.2f}x) |"
                        )
            finally:
                for group in clients.values():
                    for client in group:
                        await client.close()
    return lines


async def write_floor(workdir: Path, quick: bool) -> list[str]:
    """The durable write a call commits, through the plain drivers (bench/floor.py)."""
    from bench.floor import postgres_floor, prepare, sqlite_floor
    from bench.pg import postgres_url_from_env, reachable, scratch_schema

    lines = ["## write-floor: the call's transaction (ledger + audit record) through the plain driver, in process"]
    url, audit, bucket, entry = await prepare(workdir / "floor-sqlite")
    per_tx = sqlite_floor(url.split("///", 1)[1], audit, bucket, entry, 300 if quick else 3000)
    lines.append(f"| SQLite WAL, stdlib sqlite3 | {per_tx:,.0f} us per transaction |")
    postgres = postgres_url_from_env()
    if reachable(postgres):
        with scratch_schema(postgres) as schema_url:
            _, audit, bucket, entry = await prepare(workdir / "floor-pg", schema_url)
            per_tx = postgres_floor(schema_url, audit, bucket, entry, 100 if quick else 1000)
        lines.append(f"| PostgreSQL, plain psycopg | {per_tx:,.0f} us per transaction |")
    return lines


async def main_async(names: Sequence[str], quick: bool, pin: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="mandate-experiments-") as scratch:
        if not names or "write-floor" in names:
            with client_pinned(pin):
                for line in await write_floor(Path(scratch), quick):
                    print(line, flush=True)
            print(flush=True)
        for experiment in EXPERIMENTS:
            if names and experiment.name not in names:
                continue
            for line in await run_experiment(experiment, Path(scratch), pin=pin, quick=quick):
                print(line, flush=True)
            print(flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.experiments")
    parser.add_argument(
        "names", nargs="*", help=f"experiments to run: write-floor, {', '.join(e.name for e in EXPERIMENTS)}"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("server.auth.dev_issuer").setLevel(logging.ERROR)
    uvloop.run(main_async(args.names, args.quick, can_pin() and not args.no_pin))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
