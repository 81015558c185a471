"""``refund_create`` over streamable HTTP (stateless): Mandate's real refund path against the fair baseline, a bare
``MCPServer`` making the same refund write in the same database engine (``bench.bare_refund``), and against the bare
trivial tool, in one alternation (A B C A B C ...); then throughput with 1, 8 and 32 clients against the bare
same-write server. On SQLite always, and on PostgreSQL (each side in a schema of its own) when the run has it.

On SQLite the alternation has a fourth side, the stronger baseline: the same write on a held stdlib ``sqlite3``
connection, its statements on the event loop's thread (``bench.bare_refund_direct``, the write path Mandate itself
uses), reported beside the first in rows of its own (``refund.http.stateless.direct.*``,
``refund.throughput.direct.*``).
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
DIRECT = "bare-refund-direct"
"""The second SQLite baseline: the same write on a held ``sqlite3`` connection (``bench.bare_refund_direct``)."""
DIRECT_LABEL = "vs a bare server on a held sqlite3 connection (the write path Mandate uses)"


def refund_specs(
    workdir: Path, *, postgres_url: str | None, bare_postgres_url: str | None
) -> list[tuple[str, SiteSpec]]:
    def spec(kind: str, group: str, database_url: str | None = None) -> SiteSpec:
        return SiteSpec(kind, 0, True, str(workdir / group), 0, database_url, group=group)

    specs = [
        ("bare-refund", spec("bare_refund", "bare-refund")),
        (DIRECT, spec("bare_refund_direct", DIRECT)),
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
    trivial_name, same_name, mandate_name = ("bare", f"bare-refund{suffix}", f"mandate-refund{suffix}")
    direct_name = DIRECT if not suffix and DIRECT in sites else None
    names = (trivial_name, same_name, *((direct_name,) if direct_name else ()), mandate_name)
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
    trivial, same, mandate = (measured.sides[name] for name in (trivial_name, same_name, mandate_name))
    others = "the bare trivial tool" + (" and the bare server on a held sqlite3 connection" if direct_name else "")
    note = f"{same.n} samples a side, {rounds} rounds, alternating with {others}"
    key = f"refund.http.stateless{'.postgres' if suffix else ''}"
    label = f"refund_create over HTTP, stateless, {engine}"
    ratios = measured.round_ratios(mandate_name, same_name)
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
    if direct_name:
        direct = measured.sides[direct_name]
        direct_note = (
            f"{direct.n} samples a side, {rounds} rounds, alternating with the bare trivial tool and the bare "
            "same-write server (SQLAlchemy Core over aiosqlite)"
        )
        results.comparisons.append(
            Comparison(
                f"{key}.direct.p50",
                f"{label}: {DIRECT_LABEL}, p50",
                "us",
                direct.p(50),
                mandate.p(50),
                measured.round_ratios(mandate_name, direct_name),
                direct_note,
            )
        )
        results.comparisons.append(
            Comparison(
                f"{key}.direct.p99",
                f"{label}: {DIRECT_LABEL}, p99",
                "us",
                direct.p(99),
                mandate.p(99),
                [],
                direct_note,
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
                cpu[same_name],
                cpu[mandate_name],
                [],
                cpu_note,
            )
        )
        if direct_name:
            results.comparisons.append(
                Comparison(
                    f"{key}.direct.cpu",
                    f"{label}: {what}, {DIRECT_LABEL}",
                    "us",
                    cpu[direct_name],
                    cpu[mandate_name],
                    [],
                    cpu_note,
                )
            )
        results.comparisons.append(
            Comparison(
                f"{key}.cpu.vs_trivial",
                f"{label}: {what}, vs the bare trivial tool",
                "us",
                cpu[trivial_name],
                cpu[mandate_name],
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
            measured.round_ratios(mandate_name, trivial_name),
            note,
        )
    )


async def _throughput(results: Results, sites: dict[str, Site], plan: Plan, suffix: str, engine: str) -> None:
    bare, mandate = (f"bare-refund{suffix}", f"mandate-refund{suffix}")
    direct = DIRECT if not suffix and DIRECT in sites else None
    names = (bare, *((direct,) if direct else ()), mandate)
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
        clients_label = f"{count} client{'s' if count > 1 else ''}"
        note = f"{plan.throughput_rounds} rounds of {plan.throughput_seconds:g} s per side"
        ratios = [m / b for m, b in zip(measured.per_round[mandate], measured.per_round[bare], strict=True)]
        results.comparisons.append(
            Comparison(
                f"refund.throughput{'.postgres' if suffix else ''}.c{count}",
                f"refund_create throughput, {clients_label}, {engine} (vs bare same-write)",
                "calls/s",
                measured.rate(bare),
                measured.rate(mandate),
                ratios,
                note,
            )
        )
        if direct:
            results.comparisons.append(
                Comparison(
                    f"refund.throughput.direct.c{count}",
                    f"refund_create throughput, {clients_label}, {engine} (vs bare on a held sqlite3 connection)",
                    "calls/s",
                    measured.rate(direct),
                    measured.rate(mandate),
                    [m / b for m, b in zip(measured.per_round[mandate], measured.per_round[direct], strict=True)],
                    note,
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
