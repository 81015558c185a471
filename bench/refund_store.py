"""The refund both sides of the refund comparison make: the same customer, order and write, in the same engine.

``bench.refund_sites`` serves ``refund_create`` twice: Mandate's real tool (tools/refunds.py, the default catalog and
policy: per-call cap, daily and rolling 30-day budgets, the order's facts, the audit record) and a bare ``MCPServer``
tool that makes the same durable write with nothing around it. This module holds what they share: the order they
refund (one cent at a time, from a total no run can exhaust) and the arguments every call sends.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

TENANT = "bench"
CUSTOMER = "cus_9001"
ORDER = "ord_9001"
ORDER_TOTAL_MINOR = 10**13
"""100 billion EUR: one-cent refunds never exhaust it."""
REFUND_TOOL = "refund_create"
REFUND_ARGUMENTS: dict[str, Any] = {"order_id": ORDER, "amount": "0.01", "currency": "EUR", "reason": "bench refund"}
REFUND_SCOPES = ("refunds:create", "refunds:create:large")
"""The large tier's budgets (5,000.00 EUR a day per agent, 3,000.00 per customer in 30 days) let a full run make
its few hundred thousand one-cent refunds without reaching an approval."""


async def seed_refund_order(connection: AsyncConnection) -> None:
    """The bench customer and its order, once (the store's tables must exist)."""
    from tools.store.models import Customer, Order, OrderStatus

    customers = Customer.__table__  # type: ignore[attr-defined]
    orders = Order.__table__  # type: ignore[attr-defined]
    if (await connection.execute(select(orders.c.id).where(orders.c.id == ORDER))).first() is not None:
        return
    now = datetime.now(UTC)
    await connection.execute(
        insert(customers).values(
            id=CUSTOMER,
            tenant=TENANT,
            name="Bench Customer",
            email="bench@example.com",
            phone="+1 555 0100",
            created_at=now - timedelta(days=400),
        )
    )
    await connection.execute(
        insert(orders).values(
            id=ORDER,
            customer_id=CUSTOMER,
            tenant=TENANT,
            status=OrderStatus.DELIVERED,
            currency="EUR",
            total_minor=ORDER_TOTAL_MINOR,
            refunded_minor=0,
            placed_at=now - timedelta(days=3),
        )
    )
