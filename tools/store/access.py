"""Reading the store on behalf of a principal: tenancy applies, and another tenant's record is simply not found."""

from __future__ import annotations

from sqlmodel import select

from server.toolkit import NotFound, ToolContext
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


def _locked_orders(ctx: ToolContext) -> dict[str, Order]:
    """The orders this call's transaction has read ``FOR UPDATE`` so far (forgotten when the transaction ends)."""
    transaction = ctx.session.sync_session.get_transaction()
    held = ctx.session.info.get(_LOCKED_ORDERS)
    if held is None or held[0] is not transaction:
        held = (transaction, {})
        ctx.session.info[_LOCKED_ORDERS] = held
    orders: dict[str, Order] = held[1]
    return orders


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
