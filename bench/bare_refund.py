"""The fair baseline for a tool that writes: a bare ``MCPServer`` whose ``refund_create`` makes the same refund as
Mandate's, in the same database engine, and nothing else (no token, no scopes, no policy, no ledger, no audit).

The write is what the refund itself needs and what a careful hand-written tool would do: one transaction
(``BEGIN IMMEDIATE`` on SQLite, with the same in-process writer queue as Mandate; READ COMMITTED and a row lock on
PostgreSQL) that reads the order ``FOR UPDATE``, checks the currency and what is left to refund, adds to the order's
refunded total and inserts the refund row, then commits; the statements are SQLAlchemy Core, built once, over the
same engine configuration (``server.storage.database.Database``: aiosqlite in WAL mode with ``synchronous=NORMAL``,
or psycopg) and the same tables (``tools.store.models``).

``bench.bare_refund_direct`` is the second, stronger SQLite baseline: the same tool and write on one held stdlib
``sqlite3`` connection, its statements on the event loop's thread, as Mandate's own SQLite write path runs them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

import anyio
import mcp_types as types
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

from bench.refund_store import REFUND_TOOL, seed_refund_order
from server.storage.database import Database

OrderId = Annotated[str, Field(pattern=r"^ord_[0-9A-Za-z]{1,36}$", description="an order id such as ord_5001")]
Amount = Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,4})?$", description="a decimal amount")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code; must be the order's currency")]
Reason = Annotated[str, Field(min_length=3, max_length=500)]


class RefundPublic(BaseModel):
    refund_id: str
    order_id: str
    customer_id: str
    amount: str
    currency: str
    order_refunded_total: str
    order_refundable_left: str


def _tables() -> list[object]:
    from tools.store.models import Customer, Order, Refund

    return [Customer.__table__, Order.__table__, Refund.__table__]  # type: ignore[attr-defined]


def _money(minor: int) -> str:
    return f"{Decimal(minor).scaleb(-2):.2f}"


async def create_refund_tables(connection: AsyncConnection) -> None:
    """The store's customers, orders and refunds tables (``tools.store.models``) and the bench order, once."""
    await connection.run_sync(lambda sync: SQLModel.metadata.create_all(sync, tables=_tables()))  # type: ignore[arg-type]
    await seed_refund_order(connection)


def refund_mcp_server(name: str, refund_create: Callable[..., Awaitable[RefundPublic]]) -> MCPServer:
    """A bare ``MCPServer`` serving ``refund_create`` under the refund tool's name, description and annotations (so
    every bare refund server's input schema, output schema and MCP layer are the same)."""
    server = MCPServer(name)
    server.add_tool(
        refund_create,
        name=REFUND_TOOL,
        description="Refund part or all of an order to the customer. The amount is a decimal string in the "
        "order's currency and cannot exceed what is left unrefunded on the order.",
        annotations=types.ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False),
    )
    return server


@asynccontextmanager
async def bare_refund_server(database_url: str) -> AsyncIterator[MCPServer]:
    """The bare server, its tables created and the bench order seeded; the engine is disposed afterwards."""
    from tools.store.models import Order, Refund

    db = Database(database_url)
    orders = Order.__table__  # type: ignore[attr-defined]
    refunds = Refund.__table__  # type: ignore[attr-defined]
    read = select(orders.c.customer_id, orders.c.currency, orders.c.total_minor, orders.c.refunded_minor).where(
        orders.c.id == bindparam("order_id")
    )
    read_locked = read.with_for_update()
    add = (
        update(orders)
        .where(orders.c.id == bindparam("k_order_id"))
        .values(refunded_minor=orders.c.refunded_minor + bindparam("k_amount"))
    )
    add_refund = insert(refunds)
    queue = anyio.Lock(fast_acquire=True) if db.is_sqlite else None

    async def refund_create(order_id: OrderId, amount: Amount, currency: Currency, reason: Reason) -> RefundPublic:
        """Refund part or all of an order to the customer."""
        minor = int(Decimal(amount).scaleb(2))
        if minor <= 0:
            raise ToolError("A refund must be more than zero.")

        async def work() -> RefundPublic:
            async with db.engine.begin() as connection:
                row = (await connection.execute(read_locked, {"order_id": order_id})).first()
                if row is None:
                    raise ToolError(f"Order {order_id} not found.")
                customer_id, order_currency, total, refunded = row
                if currency != order_currency:
                    raise ToolError(f"Order {order_id} was paid in {order_currency}.")
                if minor > total - refunded:
                    raise ToolError(f"Only {_money(total - refunded)} is left to refund.")
                await connection.execute(add, {"k_order_id": order_id, "k_amount": minor})
                refund_id = f"ref_{uuid.uuid4().hex[:20]}"
                await connection.execute(
                    add_refund,
                    {
                        "id": refund_id,
                        "order_id": order_id,
                        "customer_id": customer_id,
                        "amount_minor": minor,
                        "currency": currency,
                        "reason": reason,
                        "created_at": datetime.now(UTC),
                        "created_by": "bare",
                        "audit_id": "none",
                    },
                )
            return RefundPublic(
                refund_id=refund_id,
                order_id=order_id,
                customer_id=customer_id,
                amount=_money(minor),
                currency=currency,
                order_refunded_total=_money(refunded + minor),
                order_refundable_left=_money(total - refunded - minor),
            )

        if queue is None:
            return await work()
        async with queue:
            return await work()

    try:
        async with db.engine.begin() as connection:
            await create_refund_tables(connection)
        yield refund_mcp_server("bare-refund", refund_create)
    finally:
        await db.dispose()
