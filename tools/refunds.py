"""Refunds: give back part or all of what a customer paid for an order, in the order's currency.

How much an agent may refund (per call, per day, per customer, with approval above a cap) is policy, not code:
``scopes/policy.toml`` names ``refund_create`` and reads the order through :func:`tools.orders.order_facts`.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, Field

from scopes.money import Money, MoneyError
from scopes.requirement import any_of
from server.toolkit import StrictArgs, ToolContext, ToolError, tool
from tools.compensations import flag_refund
from tools.orders import OrderId, order_facts
from tools.store.access import get_order
from tools.store.models import Refund

Amount = Annotated[
    str,
    Field(
        pattern=r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,4})?$",
        description='an exact decimal string such as "12.50", in the order\'s currency; never a JSON number',
        examples=["12.50"],
    ),
]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code; must be the order's currency")]


class RefundCreateArgs(StrictArgs):
    order_id: OrderId
    amount: Amount
    currency: Currency
    reason: Annotated[str, Field(min_length=3, max_length=500)]


class RefundPublic(BaseModel):
    refund_id: str
    order_id: str
    customer_id: str
    amount: str
    currency: str
    order_refunded_total: str
    order_refundable_left: str


def parse_amount(args: RefundCreateArgs) -> Money:
    try:
        money = Money.parse(args.amount, args.currency)
    except MoneyError as exc:
        raise ToolError("invalid_amount", f"The amount is not valid: {exc}.") from None
    if money.minor <= 0:
        raise ToolError("invalid_amount", "A refund must be more than zero.")
    return money


@tool(
    requires=any_of("refunds:create", "refunds:create:large"),
    sensitive=("reason",),
    facts=order_facts,
    money={"amount": "currency"},
    compensation=flag_refund,
)
async def refund_create(args: RefundCreateArgs, ctx: ToolContext) -> RefundPublic:
    """Refund part or all of an order to the customer. The amount is a decimal string in the order's currency and
    cannot exceed what is left unrefunded on the order."""
    amount = parse_amount(args)
    order = await get_order(ctx, args.order_id, for_update=True)
    if amount.currency != order.currency:
        raise ToolError(
            "currency_mismatch",
            f"Order {order.id} was paid in {order.currency}; a refund must be in {order.currency}, not "
            f"{amount.currency}.",
        )
    left = order.total_minor - order.refunded_minor
    if amount.minor > left:
        raise ToolError(
            "exceeds_refundable",
            f"Only {Money.from_minor(left, order.currency)} is left to refund on order {order.id}; "
            f"{amount} is more than that.",
            details={"refundable_left": Money.from_minor(left, order.currency).formatted},
        )
    order.refunded_minor += amount.minor
    refund = Refund(
        id=f"ref_{uuid.uuid4().hex[:20]}",
        order_id=order.id,
        customer_id=order.customer_id,
        amount_minor=amount.minor,
        currency=amount.currency,
        reason=args.reason,
        created_at=ctx.now,
        created_by=ctx.principal.key,
        audit_id=ctx.audit_id,
    )
    ctx.session.add(order)
    ctx.session.add(refund)
    await ctx.session.flush()
    return RefundPublic(
        refund_id=refund.id,
        order_id=order.id,
        customer_id=order.customer_id,
        amount=amount.formatted,
        currency=amount.currency,
        order_refunded_total=Money.from_minor(order.refunded_minor, order.currency).formatted,
        order_refundable_left=Money.from_minor(order.total_minor - order.refunded_minor, order.currency).formatted,
    )
