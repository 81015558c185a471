"""Orders: list a customer's orders, read one order with its lines, cancel an order that has not shipped.

``order_facts`` is the facts loader of the tools that act on one order (cancel, refund): it reads the order with its
row locked, in the call's transaction, for the policy's state preconditions (docs/policy.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, Field
from sqlmodel import col, select

from scopes.money import Money
from scopes.requirement import all_of
from server.toolkit import Facts, NotFound, StrictArgs, ToolContext, ToolError, tool
from tools.compensations import reopen_cancelled_order
from tools.customers import CustomerId
from tools.store.access import get_customer, get_order, locked_order
from tools.store.models import Order, OrderLine, OrderStatus

OrderId = Annotated[str, Field(pattern=r"^ord_[0-9A-Za-z]{1,36}$", description="an order id such as ord_5001")]
CANCELLABLE = (OrderStatus.PENDING, OrderStatus.PROCESSING)


class OrderSummary(BaseModel):
    id: str
    status: str
    total: str = Field(description="decimal string")
    refunded: str
    currency: str
    placed_at: str


class OrderLinePublic(BaseModel):
    sku: str
    description: str
    quantity: int
    unit_price: str


class OrderPublic(OrderSummary):
    customer_id: str
    lines: list[OrderLinePublic]
    cancelled_at: str | None = None


class OrdersListArgs(StrictArgs):
    customer_id: CustomerId
    status: Literal["pending", "processing", "shipped", "delivered", "cancelled"] | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20


class OrdersPage(BaseModel):
    customer_id: str
    items: list[OrderSummary]


class OrderGetArgs(StrictArgs):
    order_id: OrderId


class OrderCancelArgs(StrictArgs):
    order_id: OrderId
    reason: Annotated[str, Field(min_length=3, max_length=500, description="why the customer wants to cancel")]


class OrderCancelled(BaseModel):
    order_id: str
    status: str
    cancelled_at: str
    customer_id: str


class OrderFacts(Facts):
    """What the policy may know about the order a call acts on (``facts.<field>``)."""

    order_id: str
    customer_id: str
    tenant: str
    status: str
    currency: str
    placed_at: datetime
    total: Money
    refunded: Money
    refundable_left: Money

    def not_found(self) -> NotFound:
        return NotFound("order", self.order_id)


class _ActsOnOrder(Protocol):
    @property
    def order_id(self) -> str: ...


async def order_facts(args: _ActsOnOrder, ctx: ToolContext) -> OrderFacts:
    """The order named by ``args.order_id``, locked for the rest of the call; another tenant's is not found."""
    order = await locked_order(ctx, args.order_id)
    return OrderFacts(
        order_id=order.id,
        customer_id=order.customer_id,
        tenant=order.tenant,
        status=str(order.status),
        currency=order.currency,
        placed_at=order.placed_at,
        total=Money.from_minor(order.total_minor, order.currency),
        refunded=Money.from_minor(order.refunded_minor, order.currency),
        refundable_left=Money.from_minor(order.total_minor - order.refunded_minor, order.currency),
    )


def money(minor: int, currency: str) -> str:
    return Money.from_minor(minor, currency).formatted


def summary_of(order: Order) -> OrderSummary:
    return OrderSummary(
        id=order.id,
        status=order.status,
        total=money(order.total_minor, order.currency),
        refunded=money(order.refunded_minor, order.currency),
        currency=order.currency,
        placed_at=order.placed_at.isoformat(),
    )


@tool(requires=all_of("orders:read"), read_only=True)
async def orders_list(args: OrdersListArgs, ctx: ToolContext) -> OrdersPage:
    """List a customer's orders, newest first, optionally only those with one status."""
    customer = await get_customer(ctx, args.customer_id)
    query = select(Order).where(Order.customer_id == customer.id)
    if args.status is not None:
        query = query.where(Order.status == args.status)
    query = query.order_by(col(Order.placed_at).desc(), col(Order.id)).limit(args.limit)
    orders = (await ctx.session.exec(query)).all()
    return OrdersPage(customer_id=customer.id, items=[summary_of(order) for order in orders])


@tool(requires=all_of("orders:read"), read_only=True)
async def order_get(args: OrderGetArgs, ctx: ToolContext) -> OrderPublic:
    """Read one order with its lines, totals and how much has been refunded."""
    order = await get_order(ctx, args.order_id)
    lines = (await ctx.session.exec(select(OrderLine).where(OrderLine.order_id == order.id))).all()
    return OrderPublic(
        **summary_of(order).model_dump(),
        customer_id=order.customer_id,
        lines=[
            OrderLinePublic(
                sku=line.sku,
                description=line.description,
                quantity=line.quantity,
                unit_price=money(line.unit_price_minor, order.currency),
            )
            for line in lines
        ],
        cancelled_at=order.cancelled_at.isoformat() if order.cancelled_at else None,
    )


@tool(
    requires=all_of("orders:cancel"),
    destructive=True,
    idempotent=True,
    sensitive=("reason",),
    facts=order_facts,
    compensation=reopen_cancelled_order,
)
async def order_cancel(args: OrderCancelArgs, ctx: ToolContext) -> OrderCancelled:
    """Cancel an order that is still pending or processing. A shipped or delivered order cannot be cancelled."""
    order = await get_order(ctx, args.order_id, for_update=True)
    if order.status not in CANCELLABLE:
        raise ToolError(
            "order_not_cancellable",
            f"Order {order.id} is {order.status} and can no longer be cancelled; "
            "only pending or processing orders can be.",
            details={"status": str(order.status)},
        )
    order.cancelled_from = str(order.status)
    order.status = OrderStatus.CANCELLED
    order.cancelled_at = ctx.now
    order.cancel_audit_id = ctx.audit_id
    order.cancel_reason = args.reason
    ctx.session.add(order)
    await ctx.session.flush()
    return OrderCancelled(
        order_id=order.id, status=order.status, cancelled_at=ctx.now.isoformat(), customer_id=order.customer_id
    )
