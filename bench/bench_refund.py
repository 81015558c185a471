"""``refund_create`` over streamable HTTP (stateless): Mandate's real refund path against the fair baseline, a bare
``MCPServer`` making the same refund write in the same database engine (``bench.bare_refund``), and against the bare
trivial tool, in one alternation (A B C A B C ...); then throughput with 1, 8 and 32 clients against the bare
same-write server. On SQLite always, and on PostgreSQL (each side in a schema of its own) when the run has it.
"""

from __future__ import annotations

from pathlib import Path

from bench.client import MODERN, RawMcpClient, check_call
from bench.harness import Operation, ab_latency, ab_throughput
from bench.plan import Plan
from bench.refund_store import REFUND_ARGUMENTS, REFUND_TOOL
from bench.results import Comparison, Results
from bench.serve import SiteSpec
from bench.servers import Site, cpu_seconds

CLIENTS = (1, 8, 32)
REFUND_CALL = {"name": REFUND_TOOL, "arguments": REFUND_ARGUMENTS}


def refund_specs(
    workdir: Path, *, postgres_url: str | None, bare_postgres_url: str | None
) -> list[tuple[str, SiteSpec]]:
    def spec(kind: str, group: str, database_url: str | None = None) -> SiteSpec:
        return SiteSpec(kind, 0, True, str(workdir / group), 0, database_url, group=group)

    specs = [
        ("bare-refund", spec("bare_refund", "bare-refund")),
        ("mandate-refund", spec("mandate_refund", "mandate-refund")),
    ]
    if postgres_url and bare_postgres_url:
        specs.append(("bare-refund-pg", spec("bare_refund", "bare-refund-pg", bare_postgres_url)))
        specs.append(("mandate-refund-pg", spec("mandate_refund", "mandate-refund-pg", postgres_url)))
    return specs


def check_refund(payload: bytes) -> None:
    check_call(payload)
    if b'"refund_id"' not in payload:
        raise AssertionError(f"no refund was made: {payload[:300]!r}")


async def _open(site: Site) -> RawMcpClient:
    client = RawMcpClient(site.host, site.port, token=site.token, protocol=MODERN)
    await client.connect()
    return client


def _op(client: RawMcpClient, refund: bool) -> Operation:
    from bench.bench_http import CALL
    from bench.catalog_tools import TRIVIAL_TOOL

    encoded = (
        client.encode("tools/call", REFUND_CALL, REFUND_TOOL)
        if refund
        else client.encode("tools/call", CALL, TRIVIAL_TOOL)
    )
    check = check_refund if refund else check_call

    async def op() -> None:
        check(await client.call(encoded))

    return op


async def _latency(results: Results, sites: dict[str, Site], plan: Plan, suffix: str, engine: str) -> None:
    names = ("bare", f"bare-refund{suffix}", f"mandate-refund{suffix}")
    clients = {name: await _open(sites[name]) for name in names}
    rounds, per_round = plan.call_rounds, plan.call_per_round
    if suffix:  # PostgreSQL: slower calls, fewer samples
        rounds, per_round = max(2, rounds // 2), max(5, per_round // 2)
    try:
        ops = {name: _op(client, name != "bare") for name, client in clients.items()}
        cpu_before = {name: cpu_seconds(sites[name]) for name in names}
        measured = await ab_latency(ops, warmup=plan.call_warmup, rounds=rounds, per_round=per_round)
        cpu_after = {name: cpu_seconds(sites[name]) for name in names}
    finally:
        for client in clients.values():
            await client.close()
    trivial, same, mandate = (measured.sides[name] for name in names)
    note = f"{same.n} samples a side, {rounds} rounds, alternating with the bare trivial tool"
    key = f"refund.http.stateless{'.postgres' if suffix else ''}"
    label = f"refund_create over HTTP, stateless, {engine}"
    ratios = measured.round_ratios(names[2], names[1])
    results.comparisons.append(
        Comparison(
            f"{key}.p50", f"{label}: vs the bare same-write server, p50", "us", same.p(50), mandate.p(50), ratios, note
        )
    )
    results.comparisons.append(
        Comparison(
            f"{key}.p99", f"{label}: vs the bare same-write server, p99", "us", same.p(99), mandate.p(99), [], note
        )
    )
    calls = plan.call_warmup + rounds * per_round
    cpu = {
        name: (after - before) / calls * 1e6
        for name in names
        if (before := cpu_before[name]) is not None and (after := cpu_after[name]) is not None
    }
    if len(cpu) == len(names):  # server processes (not the smoke run's in-process servers)
        what = "server process CPU per call" + (" (PostgreSQL's own CPU not included)" if suffix else "")
        cpu_note = f"{calls} calls a side; user + system time of the server process, robust to a loaded machine"
        results.comparisons.append(
            Comparison(
                f"{key}.cpu",
                f"{label}: {what}, vs the bare same-write server",
                "us",
                cpu[names[1]],
                cpu[names[2]],
                [],
                cpu_note,
            )
        )
        results.comparisons.append(
            Comparison(
                f"{key}.cpu.vs_trivial",
                f"{label}: {what}, vs the bare trivial tool",
                "us",
                cpu[names[0]],
                cpu[names[2]],
                [],
                cpu_note,
            )
        )
    results.comparisons.append(
        Comparison(
            f"{key}.vs_trivial.p50",
            f"{label}: vs the bare trivial tool, p50",
            "us",
            trivial.p(50),
            mandate.p(50),
            measured.round_ratios(names[2], names[0]),
            note,
        )
    )


async def _throughput(results: Results, sites: dict[str, Site], plan: Plan, suffix: str, engine: str) -> None:
    names = (f"bare-refund{suffix}", f"mandate-refund{suffix}")
    for count in CLIENTS:
        opened = {name: [await _open(sites[name]) for _ in range(count)] for name in names}
        try:
            sides = {name: [_op(client, True) for client in clients] for name, clients in opened.items()}
            measured = await ab_throughput(
                sides,
                rounds=plan.throughput_rounds,
                seconds=plan.throughput_seconds,
                warmup_seconds=plan.throughput_warmup,
            )
        finally:
            for clients in opened.values():
                for client in clients:
                    await client.close()
        bare, mandate = names
        ratios = [m / b for m, b in zip(measured.per_round[mandate], measured.per_round[bare], strict=True)]
        results.comparisons.append(
            Comparison(
                f"refund.throughput{'.postgres' if suffix else ''}.c{count}",
                f"refund_create throughput, {count} client{'s' if count > 1 else ''}, {engine} (vs bare same-write)",
                "calls/s",
                measured.rate(bare),
                measured.rate(mandate),
                ratios,
                f"{plan.throughput_rounds} rounds of {plan.throughput_seconds:g} s per side",
            )
        )


async def run_refund(results: Results, sites: dict[str, Site], plan: Plan) -> None:
    engines = [("", "SQLite")]
    if "mandate-refund-pg" in sites:
        engines.append(("-pg", "PostgreSQL"))
    for suffix, engine in engines:
        await _latency(results, sites, plan, suffix, engine)
    for suffix, engine in engines:
        await _throughput(results, sites, plan, suffix, engine)
