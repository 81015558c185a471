"""Mandate against the bare server over the SDK's in-memory transport (the SDK ``Client`` in this process), and the
resident memory of one replica (a server process) at rest and after many refunds (``python -m bench.bench_memory``).

Here the client is the SDK's own (there is no wire to speak raw), so both sides include its cost: pydantic models
and the output-schema validation it runs on every structured result. The token is verified on every request, as on
stdio (``EnvironmentCredentials``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mcp.client import Client

from bench.bare import build_bare
from bench.catalog_tools import TRIVIAL_ARGUMENTS, TRIVIAL_TOOL
from bench.harness import Operation, ab_latency
from bench.mandate_site import bench_settings, mint_token, open_bench_mandate
from bench.plan import Plan
from bench.results import Comparison, Results
from server.app import build_server
from server.stdio import EnvironmentCredentials


@contextlib.asynccontextmanager
async def memory_clients(workdir: Path, tools: int = 50) -> AsyncIterator[tuple[Client, Client]]:
    """(bare client, Mandate client), both connected in process."""
    settings = bench_settings(workdir / "memory", tools=tools)
    mandate = await open_bench_mandate(settings)
    try:
        server = build_server(mandate, EnvironmentCredentials(mint_token(settings), mandate.verifier))
        async with Client(build_bare(tools), mode="legacy") as bare, Client(server, mode="legacy") as enforced:
            yield bare, enforced
    finally:
        await mandate.aclose()


def call_op(client: Client) -> Operation:
    async def op() -> None:
        result = await client.call_tool(TRIVIAL_TOOL, TRIVIAL_ARGUMENTS)
        if result.is_error:
            raise AssertionError(f"the call did not succeed: {result}")

    return op


async def run_memory(results: Results, plan: Plan, workdir: Path) -> None:
    async with memory_clients(workdir) as (bare, enforced):
        measured = await ab_latency(
            {"bare": call_op(bare), "mandate": call_op(enforced)},
            warmup=plan.memory_warmup,
            rounds=plan.memory_rounds,
            per_round=plan.memory_per_round,
        )
    a, b = measured.sides["bare"], measured.sides["mandate"]
    note = f"{a.n} + {b.n} samples, {plan.memory_rounds} rounds; the SDK client's own cost is on both sides"
    label = "tools/call over the in-memory transport (SDK client)"
    results.comparisons.append(
        Comparison(
            "call.memory.p50", f"{label}, p50", "us", a.p(50), b.p(50), measured.round_ratios("mandate", "bare"), note
        )
    )
    results.comparisons.append(Comparison("call.memory.p99", f"{label}, p99", "us", a.p(99), b.p(99), [], note))


async def profile_memory(workdir: Path, calls: int, path: Path) -> None:
    """pyinstrument over ``calls`` in-memory tools/calls through Mandate (client and server share the thread)."""
    from pyinstrument import Profiler

    async with memory_clients(workdir / "profile") as (_bare, enforced):
        op = call_op(enforced)
        for _ in range(50):
            await op()
        profiler = Profiler(interval=0.0005, async_mode="enabled")
        profiler.start()
        for _ in range(calls):
            await op()
        profiler.stop()
    path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))  # noqa: ASYNC240 - after timing


# --- resident memory of a replica: at rest and after many calls -------------------------------------------------------

RSS_CLIENTS = 32


def rss_of(pid: int) -> int:
    """The process's resident set size in bytes (``VmRSS`` in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _drive(site: Any, calls: int) -> None:
    """``calls`` refunds through ``RSS_CLIENTS`` concurrent clients, as fast as the replica answers."""
    import asyncio

    from bench.bench_refund import _op, _open

    clients = [await _open(site) for _ in range(RSS_CLIENTS)]
    remaining = calls

    async def worker(op: Operation) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await op()

    try:
        await asyncio.gather(*(worker(_op(client, True)) for client in clients))
    finally:
        for client in clients:
            await client.close()


SIDES = {
    "bare-refund": "bare same-write server",
    "bare-refund-direct": "bare server on a held sqlite3 connection",
}
"""How each measured server is named in the figures (Mandate's own name for any other)."""


def checkpoints(calls: int) -> list[int]:
    """Where the memory is read on the way: 1%, 10%, 50% and all of the calls."""
    return sorted({max(1, calls // 100), max(1, calls // 10), max(1, calls // 2), calls})


async def measure_rss(
    workdir: Path, calls: int, *, pin: bool = False, progress: Any = None, only: str | None = None
) -> dict[str, tuple[int, int, float]]:
    """For the bare same-write server and Mandate (real refund path, SQLite): RSS at rest (started, one call made),
    RSS after ``calls`` more refunds, and the seconds they took. Each in a process of its own, one after the other."""
    import time

    from bench.bench_refund import refund_specs
    from bench.servers import client_pinned, running

    figures: dict[str, tuple[int, int, float]] = {}
    for name, spec in refund_specs(workdir / "rss", postgres_url=None, bare_postgres_url=None):
        if only is not None and name != only:
            continue
        async with running([(name, spec)], pin=pin) as sites:
            site = sites[name]
            process = site.group.process
            assert process is not None
            with client_pinned(pin):
                await _drive(site, 1)
                at_rest = rss_of(process.pid)
                started = time.perf_counter()
                done = 0
                for checkpoint in checkpoints(calls):
                    await _drive(site, checkpoint - done)
                    done = checkpoint
                    if progress is not None:
                        progress(name, done, at_rest, rss_of(process.pid), time.perf_counter() - started)
                seconds = time.perf_counter() - started
                after = rss_of(process.pid)
        figures[name] = (at_rest, after, seconds)
    return figures


async def run_rss(results: Results, plan: Plan, workdir: Path, *, pin: bool) -> None:
    from bench.results import Component

    if plan.in_process_servers:  # smoke: servers run in this process, there is no replica process to measure
        results.components.append(
            Component("memory.rss", "resident memory per replica", None, "", note="skipped in the smoke run")
        )
        return
    figures = await measure_rss(workdir, plan.rss_calls, pin=pin)
    for name, (at_rest, after, seconds) in figures.items():
        side = SIDES.get(name, "Mandate (refund_create, SQLite)")
        results.components.append(
            Component(f"memory.rss.{name}.at_rest", f"resident memory at rest, {side}", at_rest / 2**20, "MiB")
        )
        results.components.append(
            Component(
                f"memory.rss.{name}.after",
                f"resident memory after {plan.rss_calls:,} refunds ({RSS_CLIENTS} clients, {seconds:.0f} s), {side}",
                after / 2**20,
                "MiB",
            )
        )


def main() -> None:
    """``python -m bench.bench_memory --calls 100000``: the replica memory figures alone."""
    import argparse
    import asyncio
    import tempfile

    from bench.servers import can_pin

    parser = argparse.ArgumentParser(prog="python -m bench.bench_memory", description="resident memory per replica")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--only", choices=("bare-refund", "mandate-refund"), default=None, help="one server only")
    args = parser.parse_args()

    def progress(name: str, done: int, at_rest: int, now: int, seconds: float) -> None:
        mib = 2**20
        print(
            f"{name}: {done:,} refunds, {now / mib:.1f} MiB (at rest {at_rest / mib:.1f} MiB), {seconds:.0f} s",
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="mandate-rss-") as scratch:
        figures = asyncio.run(measure_rss(Path(scratch), args.calls, pin=can_pin(), progress=progress, only=args.only))
    print(f"| server | at rest | after {args.calls:,} refunds | growth | time |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (at_rest, after, seconds) in figures.items():
        mib = 2**20
        print(
            f"| {name} | {at_rest / mib:.1f} MiB | {after / mib:.1f} MiB | {(after - at_rest) / mib:+.1f} MiB | "
            f"{seconds:.0f} s |"
        )


if __name__ == "__main__":
    main()
