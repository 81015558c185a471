"""Before and after a change, in one run: Mandate's refund path served from another checkout (the code before) and
from this one (after), alternating with the bare same-write server (A B C A B C ...).

    git archive main | tar -x -C /tmp/before && cp -r bench/. /tmp/before/bench/   # the code before, this bench
    uv run python -m bench.ab /tmp/before                 # stateless refund_create p50, throughput at 1/8/32 clients
    uv run python -m bench.ab /tmp/before --postgres postgresql://postgres@127.0.0.1:5432/test

Both Mandates run the same bench (``bench/`` of this checkout copied over), with the venv of this checkout; only
``server/``, ``tools/`` and ``scopes/`` differ. Each side has its own database (SQLite file, or PostgreSQL schema).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import uvloop

from bench.bench_refund import _op, _open
from bench.harness import ab_latency, ab_throughput
from bench.pg import scratch_schema
from bench.plan import FULL, QUICK, Plan
from bench.serve import SiteSpec
from bench.servers import Site, can_pin, client_pinned, cpu_seconds, running

SIDES = ("bare-refund", "mandate-before", "mandate-after")


@contextlib.contextmanager
def _urls(postgres: str | None) -> Iterator[list[str | None]]:
    if not postgres:
        yield [None, None, None]
        return
    with scratch_schema(postgres) as a, scratch_schema(postgres) as b, scratch_schema(postgres) as c:
        yield [a, b, c]


async def compare(before: Path, workdir: Path, plan: Plan, postgres: str | None) -> list[str]:
    lines = []
    with _urls(postgres) as urls:
        kinds = ("bare_refund", "mandate_refund", "mandate_refund")
        specs = [
            (name, SiteSpec(kind, 0, True, str(workdir / name), 0, url, group=name))
            for name, kind, url in zip(SIDES, kinds, urls, strict=True)
        ]
        specs[1] = (specs[1][0], replace(specs[1][1], source=str(before)))
        pin = can_pin()
        async with running(specs, pin=pin) as sites, contextlib.AsyncExitStack() as stack:
            with client_pinned(pin):
                lines += await _latency(sites, plan, stack)
                lines += await _throughput(sites, plan)
    return lines


async def _latency(sites: dict[str, Site], plan: Plan, stack: contextlib.AsyncExitStack) -> list[str]:
    clients = {name: await _open(sites[name]) for name in SIDES}
    for client in clients.values():
        stack.push_async_callback(client.close)
    cpu_before = {name: cpu_seconds(sites[name]) or 0.0 for name in SIDES}
    measured = await ab_latency(
        {name: _op(client, True) for name, client in clients.items()},
        warmup=plan.call_warmup,
        rounds=plan.call_rounds,
        per_round=plan.call_per_round,
    )
    calls = plan.call_warmup + plan.call_rounds * plan.call_per_round
    cpu = {name: ((cpu_seconds(sites[name]) or 0.0) - cpu_before[name]) / calls * 1e6 for name in SIDES}
    bare = measured.sides["bare-refund"].p(50)
    lines = [
        "| refund_create, HTTP stateless | p50 | / bare same-write | per-round ratios | server CPU per call | / bare |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for name in SIDES:
        p50 = measured.sides[name].p(50)
        ratios = measured.round_ratios(name, "bare-refund")
        lines.append(
            f"| {name} | {p50:,.0f} us | {p50 / bare:.2f}x | {min(ratios):.2f}-{max(ratios):.2f} | "
            f"{cpu[name]:,.0f} us | {cpu[name] / cpu['bare-refund']:.2f}x |"
        )
    return lines


async def _throughput(sites: dict[str, Site], plan: Plan) -> list[str]:
    lines = [
        "",
        "| clients | bare same-write | before | after | before / bare | after / bare |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for count in (1, 8, 32):
        opened = {name: [await _open(sites[name]) for _ in range(count)] for name in SIDES}
        try:
            measured = await ab_throughput(
                {name: [_op(client, True) for client in clients] for name, clients in opened.items()},
                rounds=max(2, plan.throughput_rounds),
                seconds=plan.throughput_seconds,
                warmup_seconds=plan.throughput_warmup,
            )
        finally:
            for clients in opened.values():
                for client in clients:
                    await client.close()
        bare, before, after = (measured.rate(name) for name in SIDES)
        ratio_before = statistics.median(
            m / b for m, b in zip(measured.per_round["mandate-before"], measured.per_round["bare-refund"], strict=True)
        )
        ratio_after = statistics.median(
            m / b for m, b in zip(measured.per_round["mandate-after"], measured.per_round["bare-refund"], strict=True)
        )
        lines.append(
            f"| {count} | {bare:,.0f}/s | {before:,.0f}/s | {after:,.0f}/s | {ratio_before:.2f}x | {ratio_after:.2f}x |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="a checkout of the code before the change, with this bench/")
    parser.add_argument("--full", action="store_true", help="the full plan's sample counts")
    parser.add_argument("--postgres", default=None, help="run every side on PostgreSQL (a schema each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mandate-ab-") as scratch:
        lines = uvloop.run(compare(args.before.resolve(), Path(scratch), FULL if args.full else QUICK, args.postgres))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
