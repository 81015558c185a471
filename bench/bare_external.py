"""The fair baseline for a refund at a payments provider: a bare ``MCPServer`` whose ``refund_create`` does what a
careful hand-written tool would do, and nothing else (no token, no scopes, no policy, no ledger, no audit).

It makes the same Stripe call as Mandate's adapter (``server.providers.stripe``): ``refunds.create_async`` of the
official ``stripe`` SDK on a ``StripeClient`` with ``max_network_retries=0``, over the same HTTP transport
(``server.providers.stripe_http.Httpx2StripeClient``, one 10 s deadline per request), with an idempotency key of
its own and two metadata keys naming the order and the local refund, against the same localstripe. Around the call
it keeps the order honest under concurrency the simplest careful way, in two short transactions in the same engine
and tables as ``bench.bare_refund`` (SQLite in WAL mode behind one in-process writer queue, or PostgreSQL):

1. lock the order, check the currency and what is left to refund, and hold the amount on the order (so two
   concurrent refunds cannot both pass the check while the provider is being called);
2. the provider call, outside any transaction;
3. insert the refund row with the provider's refund id (and, had the provider refused, give the hold back).

A provider that times out leaves the hold in place and the tool says so; a hand-written tool has no reconciler, so
that amount stays held until someone looks (Mandate's intent protocol is what closes that gap).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import anyio
import mcp_types as types
import stripe
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bench.bare_refund import Amount, Currency, OrderId, Reason, _money, create_refund_tables
from bench.external_provider import link_bench_order, payments_from_env
from bench.refund_store import REFUND_TOOL
from server.providers.stripe_http import Httpx2StripeClient
from server.storage.database import Database

T = TypeVar("T")


class ExternalRefundPublic(BaseModel):
    refund_id: str
    order_id: str
    customer_id: str
    amount: str
    currency: str
    order_refunded_total: str
    order_refundable_left: str
    provider_refund_id: str
    provider_status: str


@asynccontextmanager
async def bare_external_server(database_url: str) -> AsyncIterator[MCPServer]:
    """The bare server with its tables, the bench order linked to a payment at the provider; closed afterwards."""
    from tools.store.models import Order, Refund

    payments = payments_from_env()
    assert payments.api_key is not None
    db = Database(database_url)
    http = Httpx2StripeClient(timeout_seconds=payments.timeout_seconds)
    client = stripe.StripeClient(
        payments.api_key.get_secret_value(),
        base_addresses={"api": payments.api_base} if payments.api_base else None,
        max_network_retries=0,
        http_client=http,
    )
    orders = Order.__table__  # type: ignore[attr-defined]
    refunds = Refund.__table__  # type: ignore[attr-defined]
    read_locked = (
        select(
            orders.c.customer_id,
            orders.c.currency,
            orders.c.total_minor,
            orders.c.refunded_minor,
            orders.c.payment_ref,
        )
        .where(orders.c.id == bindparam("order_id"))
        .with_for_update()
    )
    add = (
        update(orders)
        .where(orders.c.id == bindparam("k_order_id"))
        .values(refunded_minor=orders.c.refunded_minor + bindparam("k_amount"))
    )
    add_refund = insert(refunds)
    queue = anyio.Lock(fast_acquire=True) if db.is_sqlite else None

    async def transaction(work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async def run() -> T:
            async with db.engine.begin() as connection:
                return await work(connection)

        if queue is None:
            return await run()
        async with queue:
            return await run()

    async def refund_create(
        order_id: OrderId, amount: Amount, currency: Currency, reason: Reason
    ) -> ExternalRefundPublic:
        """Refund part or all of an order to the customer, at the payments provider."""
        minor = int(Decimal(amount).scaleb(2))
        if minor <= 0:
            raise ToolError("A refund must be more than zero.")
        refund_id = f"ref_{uuid.uuid4().hex[:20]}"

        async def hold(connection: AsyncConnection) -> tuple[str, str, int, int]:
            row = (await connection.execute(read_locked, {"order_id": order_id})).first()
            if row is None:
                raise ToolError(f"Order {order_id} not found.")
            customer_id, order_currency, total, refunded, payment_ref = row
            if currency != order_currency:
                raise ToolError(f"Order {order_id} was paid in {order_currency}.")
            if minor > total - refunded:
                raise ToolError(f"Only {_money(total - refunded)} is left to refund.")
            if payment_ref is None:
                raise ToolError(f"Order {order_id} has no payment at the provider.")
            await connection.execute(add, {"k_order_id": order_id, "k_amount": minor})
            return customer_id, payment_ref, total, refunded + minor

        customer_id, payment_ref, total, refunded = await transaction(hold)
        try:
            made = await client.v1.refunds.create_async(
                params={
                    "payment_intent": payment_ref,
                    "amount": minor,
                    "metadata": {"order_id": order_id, "refund_id": refund_id},
                },
                options={"idempotency_key": f"bare-{refund_id}"},
            )
        except stripe.StripeError as exc:
            status = exc.http_status
            if status is None or not 400 <= status < 500 or status in (409, 429):  # it may have happened
                raise ToolError("The payments provider did not answer; the amount stays held on the order.") from None

            async def release(connection: AsyncConnection) -> None:
                await connection.execute(add, {"k_order_id": order_id, "k_amount": -minor})

            await transaction(release)
            raise ToolError(f"The payments provider refused the refund ({exc.code or exc.http_status}).") from None

        async def record(connection: AsyncConnection) -> None:
            values: dict[str, Any] = {
                "id": refund_id,
                "order_id": order_id,
                "customer_id": customer_id,
                "amount_minor": int(made.amount),
                "currency": currency,
                "reason": reason,
                "created_at": datetime.now(UTC),
                "created_by": "bare",
                "audit_id": "none",
                "provider_refund_id": made.id,
            }
            await connection.execute(add_refund, values)

        await transaction(record)
        return ExternalRefundPublic(
            refund_id=refund_id,
            order_id=order_id,
            customer_id=customer_id,
            amount=_money(minor),
            currency=currency,
            order_refunded_total=_money(refunded),
            order_refundable_left=_money(total - refunded),
            provider_refund_id=made.id,
            provider_status=str(made.status),
        )

    try:
        async with db.engine.begin() as connection:
            await create_refund_tables(connection)
        await link_bench_order(db, payments)
        server = MCPServer("bare-external")
        server.add_tool(
            refund_create,
            name=REFUND_TOOL,
            description="Refund part or all of an order to the customer at the payments provider. The amount is a "
            "decimal string in the order's currency and cannot exceed what is left unrefunded on the order.",
            annotations=types.ToolAnnotations(
                read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
            ),
        )
        yield server
    finally:
        await http.close_async()
        await db.dispose()
