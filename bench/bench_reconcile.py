"""What recovering from a provider outage costs: N external refunds left in doubt, then resolved by rounds of the
reconciler (``server.effects.reconciler.reconcile_due``) against a real localstripe, beside the provider's own
lookups alone.

    uv run python -m bench.bench_reconcile                      # 1,000 intents in doubt, SQLite
    uv run python -m bench.bench_reconcile --intents 200 --intents 2000
    uv run python -m bench.bench_reconcile --postgres postgresql://postgres@127.0.0.1:5432/test
    uv run python -m bench.bench_reconcile --intents 500 --profile /tmp/reconcile.txt   # pyinstrument, the rounds
    uv run python -m bench.bench_reconcile --concurrency 1 --concurrency 4   # one by one, then four at once

The intents are made by Mandate's own call path in this process (an MCP client in memory, a real token, the real
catalog and policy) with the payments provider wrapped so that every answer is lost: every other call's refund is
made at localstripe and its answer dropped (a timeout after the fact), the rest are dropped before they are sent.
That wrapper is the only thing here that is not the deployment's code, and it is gone before the reconciler runs,
which asks the real Stripe adapter. The refunds are spread over ``--per-payment`` refunds per order and payment,
because a lookup lists the payment's refunds (``StripeProvider.find_refund``): a payment with thousands of refunds
would measure localstripe's listing, not the reconciler.

The server's clock is then moved past the leases and rounds run until one takes up nothing. Reported: the whole
recovery's wall time, per intent, and the same lookups made by this process straight at localstripe with the same
adapter (the part no reconciler can avoid), as a ratio. At the end everything is checked where it left its traces:
every made refund ``completed`` with its provider object, every other one ``failed`` with its reservation
released, nothing left ``started``, localstripe holding exactly one refund per made one, and the spent budget and
the orders' refunded totals equal to the made refunds alone. Anything else fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from bench.external_provider import memory_localstripe, process_cpu_seconds, provider_env

ORDERS_PREFIX = "ord_r"
REFUND_AMOUNT_MINOR = 1


class BenchFailure(AssertionError):
    """The recovery did not end where it must (an intent unresolved or resolved wrongly, a refund twice)."""


class AnswersLost:
    """The payments provider, with every refund's answer lost: the even calls are made and then time out, the odd
    ones never leave. Everything else goes to the real provider."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.calls = 0
        self.made = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def refund(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls % 2:
            raise ConnectionError("bench: the connection dropped before the request was sent")
        await self._real.refund(**kwargs)
        self.made += 1
        raise TimeoutError("bench: the provider's answer was lost")


async def _seed_orders(db: Any, count: int) -> list[str]:
    """``count`` orders of the bench customer (``bench.refund_store``), each to be linked to a payment of its own."""
    from sqlalchemy import insert

    from bench.refund_store import CUSTOMER, ORDER_TOTAL_MINOR, TENANT
    from tools.store.models import Order, OrderStatus

    orders = Order.__table__  # type: ignore[attr-defined]
    ids = [f"{ORDERS_PREFIX}{index:05d}" for index in range(count)]
    placed = datetime.now(UTC) - timedelta(days=3)
    async with db.engine.begin() as connection:
        await connection.execute(
            insert(orders),
            [
                {
                    "id": order_id,
                    "customer_id": CUSTOMER,
                    "tenant": TENANT,
                    "status": OrderStatus.DELIVERED,
                    "currency": "EUR",
                    "total_minor": ORDER_TOTAL_MINOR,
                    "refunded_minor": 0,
                    "placed_at": placed,
                }
                for order_id in ids
            ],
        )
    return ids


@contextlib.contextmanager
def _database_url(postgres: str | None) -> Iterator[str | None]:
    if postgres is None:
        yield None
        return
    from bench.pg import scratch_schema

    with scratch_schema(postgres) as url:
        yield url


@contextlib.asynccontextmanager
async def _client(mandate: Any, token: str) -> AsyncIterator[Any]:
    from mcp.client import Client

    from server.app import build_server
    from server.stdio import EnvironmentCredentials

    server = build_server(mandate, EnvironmentCredentials(token, mandate.verifier))
    async with Client(server, mode="legacy") as client:
        yield client


async def _in_doubt(mandate: Any, token: str, orders: list[str], count: int) -> AnswersLost:
    """``count`` refund calls through the call path, each answered ``effect_in_doubt``."""
    from bench.refund_store import REFUND_TOOL

    real = mandate.enforcer.providers["payments"]
    lossy = AnswersLost(real)
    mandate.enforcer.providers["payments"] = lossy
    try:
        async with _client(mandate, token) as client:
            for index in range(count):
                arguments = {
                    "order_id": orders[index % len(orders)],
                    "amount": "0.01",
                    "currency": "EUR",
                    "reason": "bench refund",
                }
                result = await client.call_tool(REFUND_TOOL, arguments)
                code = (result.structured_content or {}).get("code")
                if code != "effect_in_doubt":
                    raise BenchFailure(f"call {index} was not left in doubt: {result.structured_content}")
    finally:
        mandate.enforcer.providers["payments"] = real
    return lossy


async def _lookups_alone(provider: Any, intents: list[Any]) -> list[float]:
    """The reconciler's lookup for each intent, made straight at the provider: seconds each."""
    from tools.refunds import RefundPlan

    times = []
    for intent in intents:
        plan = RefundPlan.model_validate_json(intent.plan)
        started = time.perf_counter()
        await provider.find_refund(payment_ref=plan.payment_ref, intent_id=intent.id)
        times.append(time.perf_counter() - started)
    return times


async def _check(mandate: Any, lossy: AnswersLost, count: int, localstripe_refunds: int) -> Mapping[str, int]:
    from sqlalchemy import func, select

    from server.effects.models import COMPLETED, FAILED, TABLE
    from server.ledger import BUCKETS
    from tools.store.models import Order

    orders = Order.__table__  # type: ignore[attr-defined]
    async with mandate.db.engine.connect() as connection:
        statuses = dict((await connection.execute(select(TABLE.c.status, func.count()).group_by(TABLE.c.status))).all())
        objects = (await connection.execute(select(func.count(func.distinct(TABLE.c.provider_object_id))))).scalar_one()
        refunded = (
            await connection.execute(
                select(func.coalesce(func.sum(orders.c.refunded_minor), 0)).where(orders.c.id.like(f"{ORDERS_PREFIX}%"))
            )
        ).scalar_one()
        spent = (
            await connection.execute(
                select(func.coalesce(func.sum(BUCKETS.c.spent), 0)).where(BUCKETS.c.budget == "agent_refunds_daily")
            )
        ).scalar_one()
    made = lossy.made
    expected = {COMPLETED: made, FAILED: count - made}
    if statuses != expected:
        raise BenchFailure(f"intents ended {statuses}, not {expected}")
    if objects != made or localstripe_refunds != made:
        raise BenchFailure(
            f"{made} refunds made; {objects} provider objects named, {localstripe_refunds} at localstripe"
        )
    if refunded != made * REFUND_AMOUNT_MINOR or spent != made * REFUND_AMOUNT_MINOR:
        raise BenchFailure(f"{made} cents refunded; the orders say {refunded}, the daily budget {spent}")
    return {"completed": made, "failed": count - made}


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """The call path's warnings about each intent left in doubt: expected here, thousands of them."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def _profiled(out: Path | None) -> Iterator[None]:
    if out is None:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(profiler.output_text(unicode=False, show_all=False))


async def measure(
    count: int, per_payment: int, postgres: str | None, profile: Path | None = None, concurrency: int | None = None
) -> dict[str, Any]:
    from bench.external_sites import external_settings, open_external_mandate
    from bench.mandate_site import mint_refund_token
    from server.cli.seeding import link_demo_orders
    from server.effects import intents as intent_rows
    from server.effects.models import STARTED
    from server.effects.reconciler import reconcile_due
    from server.providers.stripe import StripeProvider

    with tempfile.TemporaryDirectory(prefix="mandate-reconcile-") as scratch, _database_url(postgres) as url:
        localstripe = memory_localstripe(Path(scratch) / "localstripe")
        await anyio.to_thread.run_sync(localstripe.start)
        try:
            with provider_env(localstripe):
                settings = external_settings(Path(scratch) / "mandate", database_url=url)
                if concurrency is not None:
                    effects = settings.effects.model_copy(update={"reconcile_concurrency": concurrency})
                    settings = settings.model_copy(update={"effects": effects})
                mandate = await open_external_mandate(settings)
            try:
                provider = mandate.enforcer.providers["payments"]
                orders = await _seed_orders(mandate.db, max(1, -(-count // per_payment)))
                await link_demo_orders(mandate.db, provider)
                token = mint_refund_token(settings)
                with _quiet("server.callpath"):
                    lossy = await _in_doubt(mandate, token, orders, count)
                started_intents = list(
                    await intent_rows.listing(mandate.db, in_doubt=True, now=datetime.now(UTC), limit=count + 1)
                )
                if len(started_intents) != count or any(i.status != STARTED for i in started_intents):
                    raise BenchFailure(f"{len(started_intents)} intents in doubt, not {count}")
                real_clock = mandate.enforcer.clock
                mandate.enforcer.clock = lambda: real_clock() + timedelta(seconds=settings.effects.lease_seconds + 1)

                stripe_before = process_cpu_seconds(localstripe.pid) if localstripe.pid else 0.0
                cpu_before = time.process_time()
                began = time.perf_counter()
                rounds = 0
                with _profiled(profile):
                    while taken := await reconcile_due(mandate.enforcer):
                        rounds += 1
                        in_doubt = [r for r in taken if r.status == "in_doubt"]
                        if in_doubt:
                            raise BenchFailure(f"round {rounds} left {len(in_doubt)} in doubt: {in_doubt[0].detail}")
                elapsed = time.perf_counter() - began
                cpu = time.process_time() - cpu_before
                stripe_cpu = (process_cpu_seconds(localstripe.pid) if localstripe.pid else 0.0) - stripe_before

                adapter = StripeProvider(
                    api_key=localstripe.api_key, api_base=localstripe.api_base, timeout_seconds=10.0
                )
                try:
                    lookups = await _lookups_alone(adapter, started_intents)
                    localstripe_refunds = 0
                    async for _refund in adapter.refunds_since(None):
                        localstripe_refunds += 1
                finally:
                    await adapter.aclose()
                ended = await _check(mandate, lossy, count, localstripe_refunds)
            finally:
                await mandate.aclose()
        finally:
            localstripe.stop()
    per_intent = elapsed / count
    alone = statistics.fmean(lookups)
    return {
        "engine": "PostgreSQL" if postgres else "SQLite",
        "intents": count,
        "per_payment": per_payment,
        "rounds": rounds,
        "batch": settings.effects.reconcile_batch,
        "concurrency": settings.effects.reconcile_concurrency,
        "seconds": elapsed,
        "per_intent_us": per_intent * 1e6,
        "cpu_per_intent_us": cpu / count * 1e6,
        "localstripe_cpu_per_intent_us": stripe_cpu / count * 1e6,
        "lookup_alone_us": alone * 1e6,
        "lookup_alone_p50_us": statistics.median(lookups) * 1e6,
        "ratio": per_intent / alone,
        **ended,
    }


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| engine | intents in doubt | rounds (batch, at once) | recovery | per intent | "
        "this process's CPU per intent | the lookup alone, mean (p50) | per intent / lookup alone |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['engine']} | {r['intents']:,} ({r['completed']:,} made, {r['failed']:,} never sent) | "
            f"{r['rounds']} ({r['batch']}, {r['concurrency']}) | {r['seconds']:.2f} s | {r['per_intent_us']:,.0f} us | "
            f"{r['cpu_per_intent_us']:,.0f} us | {r['lookup_alone_us']:,.0f} us ({r['lookup_alone_p50_us']:,.0f}) | "
            f"**{r['ratio']:.2f}x** |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_reconcile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--intents", type=int, action="append", help="intents in doubt (repeatable; default 1000)")
    parser.add_argument("--per-payment", type=int, default=10, help="refunds per order and payment (default 10)")
    parser.add_argument("--postgres", help="also on this PostgreSQL (a scratch schema each)")
    parser.add_argument(
        "--concurrency", type=int, action="append", help="effects.reconcile_concurrency (repeatable: alternated)"
    )
    parser.add_argument("--profile", type=Path, help="profile the rounds (pyinstrument) into this file; SQLite only")
    args = parser.parse_args(argv)
    counts = args.intents or [1000]
    if any(count < 2 for count in counts) or args.per_payment < 1 or any(n < 1 for n in args.concurrency or []):
        parser.error("--intents must be at least 2, --per-payment and --concurrency at least 1")
    engines: list[str | None] = [None] + ([args.postgres] if args.postgres and not args.profile else [])
    started = datetime.now(UTC)
    results = [
        anyio.run(measure, count, args.per_payment, engine, args.profile, at_once, backend_options={"use_uvloop": True})
        for engine in engines
        for count in counts
        for at_once in args.concurrency or [None]
    ]
    command = " ".join(["uv run python -m bench.bench_reconcile", *(sys.argv[1:] if argv is None else argv)])
    print(f"Run: `{command}`, {started:%Y-%m-%d %H:%M} UTC")
    print()
    print(_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
