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


async def get_order(ctx: ToolContext, order_id: str, *, for_update: bool = False) -> Order:
    query = select(Order).where(Order.id == order_id)
    if for_update:
        query = query.with_for_update()
    order = (await ctx.session.exec(query)).first()
    if order is None or not _visible(ctx, order.tenant):
        raise NotFound("order", order_id)
    ctx.customer_id = order.customer_id
    return order
