"""``refund_create`` at a payments provider, over streamable HTTP (stateless): Mandate's external-effects path
(transaction (a): decision, ledger reservation, intent, audit record; (b) the provider call; (c) the outcome) beside
a bare ``MCPServer`` that makes the same Stripe call and the same refund row (``bench.bare_external``), both against
one localstripe (``bench.external_provider``).

    uv run python -m bench.bench_external            # the full plan (about 100 s)
    uv run python -m bench.bench_external --quick    # fewer samples (about 30 s with start-up)
    uv run python -m bench.bench_external --quick --postgres postgresql://postgres@127.0.0.1:5432/test  # and on PG
    uv run python -m bench.bench_external --profile bench/results/profiles/external-mandate.txt  # pyinstrument
    uv run python -m bench --only external [--quick] # the same, as a section of the suite (not in its default run)

Latency alternates five sides in blocks (A B C D E A B C D E ...): the provider alone (this process calling
localstripe through the same SDK and transport: the part of every call neither server can avoid), the bare server
and Mandate at the provider, and the reference pair, the same two refunding with no provider (``bench.bench_refund``'s
bare same-write server and Mandate's local refund), so one run shows what going to the provider adds on each side.
Each server refunds one cent a call from its own order and payment, so what localstripe holds grows alike for both.
Throughput alternates the two servers at the provider with 1, 8 and 32 clients.

Every answer is checked (a success naming the provider's ``re_`` refund; for Mandate, the effect's status
``succeeded``), and at the end every call is checked again where it left its traces: each Mandate call has a
``completed`` intent and none is ``started`` or ``failed``, each side's database has one refund row per call with a
provider id, and localstripe holds exactly one refund per call on each side's payment. Anything else fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import stripe
import uvloop

from bench.bench_refund import REFUND_CALL, check_refund
from bench.client import MODERN, RawMcpClient, check_call
from bench.external_provider import TIMEOUT_SECONDS, memory_localstripe, process_cpu_seconds, provider_env
from bench.harness import Operation, ab_latency, ab_throughput
from bench.plan import FULL, QUICK, SMOKE, Plan
from bench.refund_store import ORDER, REFUND_TOOL
from bench.results import Comparison, Component, Results
from bench.serve import SiteSpec
from bench.servers import CLIENT_CPU, Site, can_pin, client_pinned, cpu_seconds, pin_process, running
from server.providers.localstripe import LocalStripe
from server.providers.stripe_http import Httpx2StripeClient

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = (1, 8, 32)
BARE, MANDATE, PROVIDER = "bare-external", "mandate-external", "provider"
BARE_LOCAL, MANDATE_LOCAL = "bare-refund", "mandate-refund"
"""The reference pair in the latency alternation: the same refund without a provider (``bench.bench_refund``)."""
EXTERNAL = (BARE, MANDATE)


class BenchFailure(AssertionError):
    """A call did not take the success path (a refusal, an in-doubt answer, a refund missing somewhere)."""


def check_bare(payload: bytes) -> None:
    check_call(payload)
    if b'"provider_refund_id":"re_' not in payload:
        raise BenchFailure(f"bare: no refund at the provider: {payload[:300]!r}")


def check_mandate(payload: bytes) -> None:
    """A success naming the provider's refund, and the effect's status: not a refusal, not ``effect_in_doubt``."""
    check_call(payload)
    if b'"provider_refund_id":"re_' not in payload or b'"provider_status":"succeeded"' not in payload:
        raise BenchFailure(f"mandate: no completed refund at the provider: {payload[:400]!r}")
    if b'"io.mandate/effect"' not in payload or b'"status":"succeeded"' not in payload:
        raise BenchFailure(f"mandate: the effect is not reported succeeded: {payload[:400]!r}")


@dataclass
class Side:
    """One server under test, its open clients' operations counted (every counted call passed its check)."""

    site: Site
    check: Callable[[bytes], None]
    calls: int = 0

    async def open(self) -> RawMcpClient:
        client = RawMcpClient(self.site.host, self.site.port, token=self.site.token, protocol=MODERN)
        await client.connect()
        return client

    def op(self, client: RawMcpClient) -> Operation:
        encoded = client.encode("tools/call", REFUND_CALL, REFUND_TOOL)
        check = self.check

        async def op() -> None:
            check(await client.call(encoded))
            self.calls += 1

        return op


@dataclass
class Provider:
    """This process calling localstripe directly: the provider's own share of every call (SDK, HTTP, localstripe)."""

    client: stripe.StripeClient
    payment_ref: str
    calls: int = 0

    def op(self) -> Operation:
        async def op() -> None:
            self.calls += 1
            made = await self.client.v1.refunds.create_async(
                params={"payment_intent": self.payment_ref, "amount": 1, "metadata": {"order_id": ORDER}},
                options={"idempotency_key": f"direct-{os.getpid()}-{self.calls}"},
            )
            if made.status != "succeeded":
                raise BenchFailure(f"provider: a direct refund ended {made.status}")

        return op


KINDS = {BARE: "bare_external", MANDATE: "mandate_external", BARE_LOCAL: "bare_refund", MANDATE_LOCAL: "mandate_refund"}


def external_specs(workdir: Path, urls: Mapping[str, str] | None = None) -> list[tuple[str, SiteSpec]]:
    """The two servers at the provider and the same two refunding locally (the reference pair), each with a
    database of its own: a SQLite file in its directory, or the PostgreSQL URL (a schema) ``urls`` names."""
    return [
        (name, SiteSpec(kind, 0, True, str(workdir / name), 0, urls[name] if urls else None, group=name))
        for name, kind in KINDS.items()
    ]


@contextlib.contextmanager
def postgres_schemas(postgres: str) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL schema for each site (``bench.pg.scratch_schema``), dropped afterwards."""
    from bench.pg import scratch_schema

    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(scratch_schema(postgres)) for name in KINDS}


def sides_of(sites: dict[str, Site]) -> dict[str, Side]:
    checks = {BARE: check_bare, MANDATE: check_mandate, BARE_LOCAL: check_refund, MANDATE_LOCAL: check_refund}
    return {name: Side(sites[name], check) for name, check in checks.items() if name in sites}


@contextlib.asynccontextmanager
async def provider_and_sites(
    workdir: Path, plan: Plan, *, pin: bool, urls: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[LocalStripe, dict[str, Site]]]:
    """localstripe (pinned beside the load generator) and the two servers configured to reach it."""
    import anyio

    localstripe = memory_localstripe(workdir / "localstripe")
    await anyio.to_thread.run_sync(localstripe.start)
    try:
        if pin and localstripe.pid is not None:
            pin_process(localstripe.pid, CLIENT_CPU)
        specs = external_specs(workdir, urls)
        with provider_env(localstripe):
            async with running(specs, in_process=plan.in_process_servers, pin=pin) as sites:
                yield localstripe, sites
    finally:
        localstripe.stop()


async def _direct_provider(localstripe: LocalStripe) -> tuple[Provider, Httpx2StripeClient]:
    from scopes.money import Money
    from server.providers.stripe import StripeProvider

    setup = StripeProvider(api_key=localstripe.api_key, api_base=localstripe.api_base, timeout_seconds=TIMEOUT_SECONDS)
    try:
        payment = await setup.create_test_payment(
            amount=Money.parse("1000000.00", "EUR"),
            customer_name="Bench Direct",
            customer_email="direct@example.com",
            description="the provider alone",
            metadata={"purpose": "bench"},
        )
    finally:
        await setup.aclose()
    http = Httpx2StripeClient(timeout_seconds=TIMEOUT_SECONDS)
    client = stripe.StripeClient(
        localstripe.api_key, base_addresses={"api": localstripe.api_base}, max_network_retries=0, http_client=http
    )
    return Provider(client, payment), http


def _latency_plan(plan: Plan) -> tuple[int, int, int]:
    """Warm-up, rounds, calls a round: a provider call costs a few milliseconds, so fewer than the trivial tool's."""
    if plan is FULL:
        return 100, 10, 100
    return plan.call_warmup, plan.call_rounds, plan.call_per_round


async def _latency(
    results: Results, sites: dict[str, Site], sides: dict[str, Side], localstripe: LocalStripe, plan: Plan, key: str
) -> None:
    provider, http = await _direct_provider(localstripe)
    warmup, rounds, per_round = _latency_plan(plan)
    clients = {name: await side.open() for name, side in sides.items()}
    try:
        ops = {PROVIDER: provider.op(), **{name: sides[name].op(client) for name, client in clients.items()}}
        cpu_before = {name: cpu_seconds(sites[name]) for name in sides}
        stripe_before = process_cpu_seconds(localstripe.pid) if localstripe.pid else None
        calls_before = {name: side.calls for name, side in sides.items()}
        measured = await ab_latency(ops, warmup=warmup, rounds=rounds, per_round=per_round)
        cpu_after = {name: cpu_seconds(sites[name]) for name in sides}
        stripe_after = process_cpu_seconds(localstripe.pid) if localstripe.pid else None
        calls = {name: side.calls - calls_before[name] for name, side in sides.items()}
    finally:
        for client in clients.values():
            await client.close()
        await http.close_async()
    direct, bare, mandate = (measured.sides[name] for name in (PROVIDER, BARE, MANDATE))
    engine = "PostgreSQL" if key.endswith(".postgres") else "SQLite"
    label = f"refund_create at a payments provider (localstripe) over HTTP, stateless, {engine}"
    others = ", ".join(name for name in ops if name not in EXTERNAL)
    note = f"{bare.n} samples a side, {rounds} rounds, alternating with {others}"
    results.comparisons += [
        Comparison(
            f"{key}.p50",
            f"{label}: vs the bare server calling the same provider, p50",
            "us",
            bare.p(50),
            mandate.p(50),
            measured.round_ratios(MANDATE, BARE),
            note,
        ),
        Comparison(
            f"{key}.p99", f"{label}: vs the bare server calling the same provider, p99", "us", bare.p(99), mandate.p(99)
        ),
    ]
    if MANDATE_LOCAL in sides:
        local_bare, local_mandate = measured.sides[BARE_LOCAL], measured.sides[MANDATE_LOCAL]
        results.comparisons.append(
            Comparison(
                f"{key}.reference.local.p50",
                f"reference, same run: refund_create with no provider (a local refund row), {engine}: vs the bare "
                "same-write server, p50",
                "us",
                local_bare.p(50),
                local_mandate.p(50),
                measured.round_ratios(MANDATE_LOCAL, BARE_LOCAL),
                note,
            )
        )
    results.components += [
        Component(
            f"{key}.provider.p50",
            f"the provider alone: the load generator -> stripe SDK (same transport) -> localstripe, p50, {engine}",
            direct.p(50),
            "us",
        ),
        Component(f"{key}.provider.p99", f"the provider alone, p99, {engine}", direct.p(99), "us"),
        Component(
            f"{key}.bare.above_provider.p50",
            f"bare server's p50 above the provider alone (MCP over HTTP, two short transactions), {engine}",
            bare.p(50) - direct.p(50),
            "us",
        ),
        Component(
            f"{key}.mandate.above_provider.p50",
            f"Mandate's p50 above the provider alone (MCP over HTTP, token, policy, (a), (c)), {engine}",
            mandate.p(50) - direct.p(50),
            "us",
        ),
    ]
    if MANDATE_LOCAL in sides:
        results.components.append(
            Component(
                f"{key}.mandate.above_local.p50",
                f"Mandate's p50 at the provider above its own local refund (the provider call and step (c)), {engine}",
                mandate.p(50) - measured.sides[MANDATE_LOCAL].p(50),
                "us",
            )
        )
    cpu = {
        name: (after - before) / calls[name] * 1e6
        for name in sides
        if (before := cpu_before[name]) is not None and (after := cpu_after[name]) is not None
    }
    if len(cpu) == len(sides):  # server processes (not the smoke run's in-process servers)
        cpu_note = f"{calls[MANDATE]} calls a side; user + system time of the server process (not localstripe's)"
        results.comparisons.append(
            Comparison(
                f"{key}.cpu",
                f"{label}: server process CPU per call, vs the bare server",
                "us",
                cpu[BARE],
                cpu[MANDATE],
                [],
                cpu_note,
            )
        )
        if MANDATE_LOCAL in sides:
            results.comparisons.append(
                Comparison(
                    f"{key}.reference.local.cpu",
                    f"reference, same run: refund_create with no provider, {engine}: server process CPU per call, vs "
                    "the bare same-write server",
                    "us",
                    cpu[BARE_LOCAL],
                    cpu[MANDATE_LOCAL],
                    [],
                    cpu_note,
                )
            )
    if stripe_before is not None and stripe_after is not None:
        refunds = provider.calls + sum(calls[name] for name in EXTERNAL)
        results.components.append(
            Component(
                f"{key}.localstripe.cpu",
                f"localstripe's own CPU per refund (its process, over every refund of the latency phase), {engine}",
                (stripe_after - stripe_before) / refunds * 1e6,
                "us",
                f"{refunds} refunds",
            )
        )


async def _throughput(results: Results, sides: dict[str, Side], plan: Plan, key: str) -> None:
    engine = "PostgreSQL" if key.endswith(".postgres") else "SQLite"
    for count in CLIENTS:
        opened = {name: [await side.open() for _ in range(count)] for name, side in sides.items()}
        try:
            measured = await ab_throughput(
                {name: [sides[name].op(client) for client in clients] for name, clients in opened.items()},
                rounds=plan.throughput_rounds,
                seconds=plan.throughput_seconds,
                warmup_seconds=plan.throughput_warmup,
            )
        finally:
            for clients in opened.values():
                for client in clients:
                    await client.close()
        ratios = [m / b for m, b in zip(measured.per_round[MANDATE], measured.per_round[BARE], strict=True)]
        results.comparisons.append(
            Comparison(
                f"{key.replace('.http.stateless', '.throughput')}.c{count}",
                f"refund_create at localstripe, throughput, {count} client{'s' if count > 1 else ''}, {engine} "
                "(vs the bare server calling the same provider)",
                "calls/s",
                measured.rate(BARE),
                measured.rate(MANDATE),
                ratios,
                f"{plan.throughput_rounds} rounds of {plan.throughput_seconds:g} s per side",
            )
        )


async def verify(sites: dict[str, Site], sides: dict[str, Side], localstripe: LocalStripe) -> list[str]:
    """Every call made left its traces (see the module docstring); raises :class:`BenchFailure` otherwise."""
    from sqlalchemy import func, select

    from server.effects.models import COMPLETED, EffectIntent
    from server.providers.stripe import StripeProvider
    from server.storage.database import Database, sqlite_url_for
    from tools.store.models import Order, Refund

    orders = Order.__table__  # type: ignore[attr-defined]
    refunds = Refund.__table__  # type: ignore[attr-defined]
    intents = EffectIntent.__table__  # type: ignore[attr-defined]
    provider = StripeProvider(api_key=localstripe.api_key, api_base=localstripe.api_base, timeout_seconds=60)
    lines: list[str] = []
    try:
        for name, side in sides.items():
            spec = sites[name].spec
            db = Database(spec.database_url or sqlite_url_for(Path(spec.data_dir)))
            try:
                async with db.engine.connect() as connection:
                    payment_ref = (
                        await connection.execute(select(orders.c.payment_ref).where(orders.c.id == ORDER))
                    ).scalar_one()
                    rows = (
                        await connection.execute(
                            select(func.count()).where(
                                refunds.c.order_id == ORDER, refunds.c.provider_refund_id.is_not(None)
                            )
                        )
                    ).scalar_one()
                    statuses: dict[str, int] = {}
                    if name == MANDATE:
                        counted = await connection.execute(
                            select(intents.c.status, func.count()).group_by(intents.c.status)
                        )
                        statuses = {str(status): int(n) for status, n in counted.all()}
            finally:
                await db.dispose()
            at_provider = 0
            async for _refund in provider.refunds_of(payment_ref):
                at_provider += 1
            if rows != side.calls or at_provider != side.calls:
                raise BenchFailure(
                    f"{name}: {side.calls} calls answered, {rows} refund rows, {at_provider} refunds at the provider"
                )
            if name == MANDATE and statuses != {COMPLETED: side.calls}:
                raise BenchFailure(f"{name}: intents by status {statuses}, expected {side.calls} completed")
            what = f", {statuses.get(COMPLETED, 0)} intents completed, none in doubt" if name == MANDATE else ""
            lines.append(f"{name}: {side.calls} calls, {rows} refund rows, {at_provider} refunds at localstripe{what}")
    finally:
        await provider.aclose()
    return lines


async def run_external(
    results: Results,
    plan: Plan,
    workdir: Path,
    *,
    pin: bool,
    urls: Mapping[str, str] | None = None,
) -> None:
    """The section: latency (five sides), throughput (two), then the check of every call; on one engine."""
    key = "external.http.stateless" + (".postgres" if urls else "")
    scratch = workdir / ("external-pg" if urls else "external")
    started = time.perf_counter()
    async with provider_and_sites(scratch, plan, pin=pin, urls=urls) as (localstripe, sites):
        sides = sides_of(sites)
        with client_pinned(pin):
            await _latency(results, sites, sides, localstripe, plan, key)
            external = {name: sides[name] for name in EXTERNAL}
            await _throughput(results, external, plan, key)
        checked = await verify(sites, external, localstripe)
    results.notes.append(
        f"External effects ({key}): one localstripe in memory"
        + (", pinned beside the load generator (CPU 1)" if pin else "")
        + f"; every call checked: {'; '.join(checked)}; {time.perf_counter() - started:.0f} s."
    )


async def profile_external(calls: int, out: Path, *, pin: bool, site_name: str = MANDATE) -> None:
    """pyinstrument on one server process (Mandate's by default) over ``calls`` sequential external refunds, after
    50 warm-up calls (as ``bench.profile_refund``: the profiler slows the server about twice; read shares)."""
    import anyio

    with tempfile.TemporaryDirectory(prefix="mandate-profile-external-") as scratch:
        workdir = Path(scratch)
        localstripe = memory_localstripe(workdir / "localstripe")
        await anyio.to_thread.run_sync(localstripe.start)
        try:
            if pin and localstripe.pid is not None:
                pin_process(localstripe.pid, CLIENT_CPU)
            specs = [
                (name, replace(spec, profile=str(out))) for name, spec in external_specs(workdir) if name == site_name
            ]
            with provider_env(localstripe):
                async with running(specs, pin=pin) as sites:
                    side = sides_of(sites)[site_name]
                    with client_pinned(pin):
                        client = await side.open()
                        try:
                            op = side.op(client)
                            for _ in range(50):
                                await op()
                            await sites[site_name].profile(signal.SIGUSR1)
                            for _ in range(calls):
                                await op()
                            await sites[site_name].profile(signal.SIGUSR2)
                        finally:
                            await client.close()
        finally:
            localstripe.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_external", description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer samples")
    size.add_argument("--smoke", action="store_true", help="one short iteration, servers in this process")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where results are written")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the servers and the client to CPUs")
    parser.add_argument("--postgres", default=None, help="also run on this PostgreSQL (a schema each side)")
    parser.add_argument("--profile", type=Path, default=None, help="instead: profile one server's path into this file")
    parser.add_argument("--profile-calls", type=int, default=1000)
    parser.add_argument(
        "--profile-site", choices=(MANDATE, BARE, MANDATE_LOCAL), default=MANDATE, help="which server to profile"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("server.auth.dev_issuer").setLevel(logging.ERROR)
    plan = SMOKE if args.smoke else QUICK if args.quick else FULL
    pin = can_pin() and not args.no_pin and not plan.in_process_servers
    if args.profile is not None:
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        uvloop.run(profile_external(args.profile_calls, args.profile.resolve(), pin=pin, site_name=args.profile_site))
        print(f"profile: {args.profile}")
        return 0
    command = "uv run python -m bench.bench_external" + (f" --{plan.name}" if plan is not FULL else "")
    results = uvloop.run(_run(plan, command, pin=pin, postgres=args.postgres))
    path = results.write(args.out / "external")
    from bench.report import render

    print(render(results))
    print(f"\nresults: {path}")
    return 0


async def _run(plan: Plan, command: str, *, pin: bool, postgres: str | None) -> Results:
    results = Results(plan.name, command)
    load_before = _load()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mandate-bench-external-") as scratch:
        await run_external(results, plan, Path(scratch), pin=pin)
        if postgres:
            with postgres_schemas(postgres) as urls:
                await run_external(results, plan, Path(scratch), pin=pin, urls=urls)
    results.seconds = time.perf_counter() - started
    results.notes.append(f"Load average (1 min) before and after the run: {load_before} / {_load()}.")
    return results


def _load() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
