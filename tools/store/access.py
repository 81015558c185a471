"""Reading the store on behalf of a principal: tenancy applies, and another tenant's record is simply not found.

:func:`get_order` hands back the ORM object, for tools that change an order through the session; :func:`locked_order`
reads the same row through a statement built once (:class:`server.toolkit.Statement`) as a plain
:class:`OrderRow`, for the facts loader and the refund, the call path's hot statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sql_select
from sqlalchemy import update as sql_update
from sqlmodel import select

from server.toolkit import NotFound, Statement, ToolContext
from tools.store.models import Customer, Order


def _visible(ctx: ToolContext, tenant: str) -> bool:
    return ctx.principal.tenant is None or ctx.principal.tenant == tenant


async def get_customer(ctx: ToolContext, customer_id: str) -> Customer:
    customer = await ctx.session.get(Customer, customer_id)
    if customer is None or not _visible(ctx, customer.tenant):
        raise NotFound("customer", customer_id)
    ctx.customer_id = customer.id
    return customer


_LOCKED_ORDERS = "tools.store.locked_orders"


def _held(ctx: ToolContext, key: str) -> dict[str, Any]:
    """What this call's transaction has read ``FOR UPDATE`` so far, under ``key`` (forgotten when it ends)."""
    transaction = ctx.session.sync_session.get_transaction()
    held = ctx.session.info.get(key)
    if held is None or held[0] is not transaction:
        held = (transaction, {})
        ctx.session.info[key] = held
    rows: dict[str, Any] = held[1]
    return rows


def _locked_orders(ctx: ToolContext) -> dict[str, Order]:
    """The ORM orders this call's transaction has locked."""
    return _held(ctx, _LOCKED_ORDERS)


async def get_order(ctx: ToolContext, order_id: str, *, for_update: bool = False) -> Order:
    """The order, locked for the rest of the transaction with ``for_update``.

    An order this transaction already locked (the facts loader reads it before the tool runs) is not read again:
    the row cannot have changed under the lock, and the session would hand back the same object anyway (a
    repeated ``SELECT`` does not refresh an object already loaded), so the second read was only a round trip.
    """
    locked = _locked_orders(ctx)
    order = locked.get(order_id)
    if order is None:
        query = select(Order).where(Order.id == order_id)
        if for_update:
            query = query.with_for_update()
        order = (await ctx.session.exec(query)).first()
        if order is not None and for_update:
            locked[order_id] = order
    if order is None or not _visible(ctx, order.tenant):
        raise NotFound("order", order_id)
    ctx.customer_id = order.customer_id
    return order


ORDERS = Order.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class OrderRow:
    """An order as its row reads, locked for the rest of the call's transaction."""

    id: str
    customer_id: str
    tenant: str
    status: str
    currency: str
    total_minor: int
    refunded_minor: int
    placed_at: datetime
    payment_ref: str | None


_ORDER_LOCKED = Statement(
    sql_select(*(ORDERS.c[name] for name in OrderRow.__dataclass_fields__))
    .where(ORDERS.c.id == bindparam("order_id"))
    .with_for_update()
)
_ADD_REFUNDED = Statement(
    sql_update(ORDERS)
    .where(ORDERS.c.id == bindparam("k_order_id"))
    .values(refunded_minor=ORDERS.c.refunded_minor + bindparam("k_amount"))
)
_LOCKED_ROWS = "tools.store.locked_order_rows"


def _locked_rows(ctx: ToolContext) -> dict[str, OrderRow]:
    """The order rows this call's transaction has locked."""
    return _held(ctx, _LOCKED_ROWS)


async def locked_order(ctx: ToolContext, order_id: str) -> OrderRow:
    """The order, read ``FOR UPDATE`` once per transaction (the facts loader's read is the tool's read too)."""
    rows = _locked_rows(ctx)
    order = rows.get(order_id)
    if order is None:
        found = await ctx.fetch_one(_ORDER_LOCKED, order_id=order_id)
        if found is not None:
            order = rows[order_id] = OrderRow(*found)
    if order is None or not _visible(ctx, order.tenant):
        raise NotFound("order", order_id)
    ctx.customer_id = order.customer_id
    return order


async def add_refunded(ctx: ToolContext, order: OrderRow, amount_minor: int) -> OrderRow:
    """Add to the order's refunded total (under the lock :func:`locked_order` took); the order as it now reads."""
    await ctx.write(_ADD_REFUNDED, k_order_id=order.id, k_amount=amount_minor)  # the locked row: exactly one
    updated = OrderRow(
        order.id,
        order.customer_id,
        order.tenant,
        order.status,
        order.currency,
        order.total_minor,
        order.refunded_minor + amount_minor,
        order.placed_at,
        order.payment_ref,
    )
    _locked_rows(ctx)[order.id] = updated
    return updated
