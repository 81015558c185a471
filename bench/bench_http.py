"""Mandate against the bare server over streamable HTTP: tools/call latency (stateless and stateful), throughput
with 8 and 32 concurrent clients, tools/list latency with 50 and 1,000 tools, and a profile of each server."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from bench.bench_refund import refund_specs, run_refund
from bench.catalog_tools import TRIVIAL_ARGUMENTS, TRIVIAL_TOOL
from bench.client import LEGACY, MODERN, RawMcpClient, check_call, tool_count
from bench.harness import Operation, ab_latency, ab_throughput
from bench.plan import Plan
from bench.results import Comparison, Results
from bench.serve import SiteSpec
from bench.servers import Site, client_pinned, running

CALL = {"name": TRIVIAL_TOOL, "arguments": TRIVIAL_ARGUMENTS}


def site_specs(
    workdir: Path, *, postgres_url: str | None, sdk_auth: bool, bare_postgres_url: str | None = None
) -> list[tuple[str, SiteSpec]]:
    """Every server the HTTP section talks to, by name; the stateless and stateful variants share a process."""

    def spec(kind: str, tools: int, stateless: bool, group: str, database_url: str | None = None) -> SiteSpec:
        return SiteSpec(kind, tools, stateless, str(workdir / group), 0, database_url, group=group)

    specs = [
        ("bare", spec("bare", 50, True, "bare-50")),
        ("bare-stateful", spec("bare", 50, False, "bare-50")),
        ("mandate", spec("mandate", 50, True, "mandate-50")),
        ("mandate-stateful", spec("mandate", 50, False, "mandate-50")),
        ("bare-1000", spec("bare", 1000, True, "bare-1000")),
        ("mandate-1000", spec("mandate", 1000, True, "mandate-1000")),
    ]
    if postgres_url:
        specs.append(("mandate-pg", spec("mandate", 50, True, "mandate-50-pg", postgres_url)))
    if sdk_auth:
        specs.append(("bare-sdk-auth", spec("bare_auth", 50, True, "bare-50-sdk-auth")))
    specs.extend(refund_specs(workdir, postgres_url=postgres_url, bare_postgres_url=bare_postgres_url))
    return specs


@contextlib.asynccontextmanager
async def _clients(
    sites: dict[str, Site], names: list[str], count: int = 1
) -> AsyncIterator[dict[str, list[RawMcpClient]]]:
    opened: dict[str, list[RawMcpClient]] = {}
    try:
        for name in names:
            site = sites[name]
            protocol = MODERN if site.spec.stateless else LEGACY
            opened[name] = []
            for _ in range(count):
                client = RawMcpClient(site.host, site.port, token=site.token, protocol=protocol)
                await client.connect()
                opened[name].append(client)
        yield opened
    finally:
        for clients in opened.values():
            for client in clients:
                await client.close()


def _call_op(client: RawMcpClient) -> Operation:
    encoded = client.encode("tools/call", CALL, TRIVIAL_TOOL)

    async def op() -> None:
        check_call(await client.call(encoded))

    return op


def _list_op(client: RawMcpClient, expected: int) -> Operation:
    encoded = client.encode("tools/list", {})
    first = True

    async def op() -> None:
        nonlocal first
        payload = await client.call(encoded)
        if first:
            found = tool_count(payload)
            if found != expected:
                raise AssertionError(f"tools/list returned {found} tools, expected {expected}")
            first = False

    return op


async def _latency(
    results: Results,
    sites: dict[str, Site],
    key: str,
    label: str,
    pair: tuple[str, str],
    plan: Plan,
    *,
    list_of: int = 0,
) -> None:
    bare, mandate = pair
    if list_of:
        warmup = plan.list_warmup
        rounds = plan.list50_rounds if list_of == 50 else plan.list1000_rounds
        per_round = plan.list50_per_round if list_of == 50 else plan.list1000_per_round
    else:
        warmup, rounds, per_round = plan.call_warmup, plan.call_rounds, plan.call_per_round
        if mandate == "mandate-pg":  # ~15 ms a call: fewer samples keep the run under five minutes
            rounds, per_round = max(2, rounds // 2), max(5, per_round // 2)
    async with _clients(sites, [bare, mandate]) as clients:
        ops = {
            name: (_list_op(clients[name][0], list_of) if list_of else _call_op(clients[name][0]))
            for name in (bare, mandate)
        }
        measured = await ab_latency(ops, warmup=warmup, rounds=rounds, per_round=per_round)
    a, b = measured.sides[bare], measured.sides[mandate]
    ratios = measured.round_ratios(mandate, bare)
    note = f"{a.n} + {b.n} samples, {rounds} rounds"
    results.comparisons.append(Comparison(f"{key}.p50", f"{label}, p50", "us", a.p(50), b.p(50), ratios, note))
    results.comparisons.append(Comparison(f"{key}.p99", f"{label}, p99", "us", a.p(99), b.p(99), [], note))


async def _throughput(results: Results, sites: dict[str, Site], concurrency: int, plan: Plan) -> None:
    async with _clients(sites, ["bare", "mandate"], concurrency) as clients:
        sides = {name: [_call_op(client) for client in clients[name]] for name in ("bare", "mandate")}
        measured = await ab_throughput(
            sides, rounds=plan.throughput_rounds, seconds=plan.throughput_seconds, warmup_seconds=plan.throughput_warmup
        )
    ratios = [m / b for m, b in zip(measured.per_round["mandate"], measured.per_round["bare"], strict=True)]
    results.comparisons.append(
        Comparison(
            f"throughput.http.c{concurrency}",
            f"tools/call throughput, {concurrency} concurrent clients (HTTP, stateless)",
            "calls/s",
            measured.rate("bare"),
            measured.rate("mandate"),
            ratios,
            f"{plan.throughput_rounds} rounds of {plan.throughput_seconds:g} s per side",
        )
    )


async def profile_site(site: Site, calls: int) -> None:
    """Profile ``calls`` sequential tools/calls inside the server process (pyinstrument on its event loop)."""
    async with _clients({site.name: site}, [site.name]) as clients:
        op = _call_op(clients[site.name][0])
        for _ in range(50):
            await op()
        await site.profile(signal.SIGUSR1)
        for _ in range(calls):
            await op()
        await site.profile(signal.SIGUSR2)


async def run_http(
    results: Results,
    plan: Plan,
    workdir: Path,
    *,
    pin: bool,
    postgres_url: str | None,
    sdk_auth: bool,
    profile_dir: Path | None,
    bare_postgres_url: str | None = None,
) -> None:
    specs = site_specs(workdir, postgres_url=postgres_url, sdk_auth=sdk_auth, bare_postgres_url=bare_postgres_url)
    if profile_dir is not None:
        specs = [
            (name, replace(spec, profile=str(profile_dir / f"http-{spec.kind}.txt")))
            if spec.group in ("bare-50", "mandate-50")
            else (name, spec)
            for name, spec in specs
        ]
    started = time.perf_counter()
    async with running(specs, in_process=plan.in_process_servers, pin=pin) as sites:
        results.notes.append(f"{len(sites)} servers started in {time.perf_counter() - started:.1f} s.")
        with client_pinned(pin):
            await _latency(
                results,
                sites,
                "call.http.stateless",
                "tools/call over HTTP, stateless (2026-07-28)",
                ("bare", "mandate"),
                plan,
            )
            await _latency(
                results,
                sites,
                "call.http.stateful",
                "tools/call over HTTP, stateful session (2025-11-25)",
                ("bare-stateful", "mandate-stateful"),
                plan,
            )
            if "mandate-pg" in sites:
                await _latency(
                    results,
                    sites,
                    "call.http.stateless.postgres",
                    "tools/call over HTTP, stateless, Mandate on PostgreSQL",
                    ("bare", "mandate-pg"),
                    plan,
                )
            if "bare-sdk-auth" in sites:
                await _latency(
                    results,
                    sites,
                    "call.http.stateless.sdk_auth",
                    "tools/call over HTTP, stateless: bare server with the SDK's bearer check (vs. bare)",
                    ("bare", "bare-sdk-auth"),
                    plan,
                )
            await run_refund(results, sites, plan)
            for concurrency in (8, 32):
                await _throughput(results, sites, concurrency, plan)
            await _latency(
                results, sites, "list.http.50", "tools/list over HTTP, 50 tools", ("bare", "mandate"), plan, list_of=50
            )
            await _latency(
                results,
                sites,
                "list.http.1000",
                "tools/list over HTTP, 1,000 tools",
                ("bare-1000", "mandate-1000"),
                plan,
                list_of=1000,
            )
            if profile_dir is not None and plan.profile_calls:
                for name in ("bare", "mandate"):
                    await profile_site(sites[name], plan.profile_calls)
                    results.profiles[f"http-{name}"] = str(profile_dir / f"http-{name}.txt")
