"""Refunds: give back part or all of what a customer paid for an order, in the order's currency.

How much an agent may refund (per call, per day, per customer, with approval above a cap) is policy, not code:
``scopes/policy.toml`` names ``refund_create`` and reads the order through :func:`tools.orders.order_facts`.

With a payments provider configured (``[payments]``, docs/effects.md) the refund is made at the provider, against
the order's payment, and the framework runs it exactly once (:class:`server.toolkit.External`): the functions
below only check and hold the order's refundable amount, make and find the provider's refund, and write the local
row once the provider has made it. Without one, the refund is a row in the embedded demo store, as it always was.
An amount whose refund is in doubt stays held on the order, so "refundable left" never counts it twice.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, Field
from sqlalchemy import insert

from scopes.money import Money, MoneyError
from scopes.requirement import any_of
from server.toolkit import (
    EffectCall,
    External,
    ProviderObject,
    Statement,
    StrictArgs,
    ToolContext,
    ToolError,
    tool,
)
from tools.compensations import flag_refund
from tools.orders import OrderId, order_facts
from tools.store.access import OrderRow, add_refunded, locked_order
from tools.store.models import Order, Refund

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
    provider_refund_id: str | None = Field(default=None, description="the refund at the payments provider (re_...)")
    provider_status: str | None = Field(default=None, description="its status there: succeeded or pending")


class RefundPlan(BaseModel):
    """What a provider refund will do, fixed in the decision's transaction and kept with the intent."""

    order_id: str
    customer_id: str
    payment_ref: str
    amount: str
    currency: str
    reason: str

    @property
    def money(self) -> Money:
        return Money.parse(self.amount, self.currency)


def parse_amount(args: RefundCreateArgs) -> Money:
    try:
        money = Money.parse(args.amount, args.currency)
    except MoneyError as exc:
        raise ToolError("invalid_amount", f"The amount is not valid: {exc}.") from None
    if money.minor <= 0:
        raise ToolError("invalid_amount", "A refund must be more than zero.")
    return money


async def _refundable(args: RefundCreateArgs, ctx: ToolContext) -> tuple[Money, OrderRow]:
    """The amount, and the order (locked; read by the facts loader already), once the refund is known to fit."""
    amount = parse_amount(args)
    order = await locked_order(ctx, args.order_id)
    _check_fits(amount, order)
    return amount, order


def _check_fits(amount: Money, order: Order | OrderRow) -> None:
    """Refuse a refund in another currency than the order's, or for more than is left to refund on it."""
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


async def hold_refund(args: RefundCreateArgs, ctx: ToolContext) -> RefundPlan:
    """``prepare``: check the refund, and hold its amount on the order until the provider's answer is known."""
    amount, order = await _refundable(args, ctx)
    if order.payment_ref is None:
        raise ToolError(
            "order_not_paid_at_provider",
            f"Order {order.id} has no payment at the payments provider, so it cannot be refunded there; nothing "
            "was done.",
        )
    await add_refunded(ctx, order, amount.minor)
    return RefundPlan(
        order_id=order.id,
        customer_id=order.customer_id,
        payment_ref=order.payment_ref,
        amount=amount.formatted,
        currency=amount.currency,
        reason=args.reason,
    )


async def send_refund(plan: RefundPlan, provider: Any, effect: EffectCall) -> ProviderObject:
    """``call``: the refund at the provider, with the framework's idempotency key and metadata."""
    refund: ProviderObject = await provider.refund(
        payment_ref=plan.payment_ref,
        amount=plan.money,
        idempotency_key=effect.idempotency_key,
        metadata=effect.metadata,
    )
    return refund


async def find_refund(plan: RefundPlan, provider: Any, effect: EffectCall) -> ProviderObject | None:
    """``find``: the provider's refund of this payment whose metadata names the intent."""
    found: ProviderObject | None = await provider.find_refund(payment_ref=plan.payment_ref, intent_id=effect.intent_id)
    return found


async def record_refund(plan: RefundPlan, refund: ProviderObject, ctx: ToolContext) -> RefundPublic:
    """``complete``: the local refund row for the provider's refund (the amount was held by ``hold_refund``)."""
    order = await locked_order(ctx, plan.order_id)
    held = plan.money
    if refund.amount != held:  # the provider's amount is what happened; the hold follows it
        order = await add_refunded(ctx, order, refund.amount.minor - held.minor)
    refund_id = f"ref_{uuid.uuid4().hex[:20]}"
    await ctx.write(
        _ADD_REFUND,
        id=refund_id,
        order_id=order.id,
        customer_id=order.customer_id,
        amount_minor=refund.amount.minor,
        currency=refund.amount.currency,
        reason=plan.reason,
        created_at=ctx.now,
        created_by=ctx.principal.key,
        audit_id=ctx.audit_id,
        provider_refund_id=refund.id,
    )
    answer = _answer(refund_id, refund.amount, order)
    return answer.model_copy(update={"provider_refund_id": refund.id, "provider_status": refund.status})


async def release_refund(plan: RefundPlan, ctx: ToolContext) -> None:
    """``release``: the provider did not refund; the held amount is refundable again."""
    order = await locked_order(ctx, plan.order_id)
    await add_refunded(ctx, order, -plan.money.minor)


def _answer(refund_id: str, amount: Money, order: Order | OrderRow) -> RefundPublic:
    return RefundPublic(
        refund_id=refund_id,
        order_id=order.id,
        customer_id=order.customer_id,
        amount=amount.formatted,
        currency=amount.currency,
        order_refunded_total=Money.from_minor(order.refunded_minor, order.currency).formatted,
        order_refundable_left=Money.from_minor(order.total_minor - order.refunded_minor, order.currency).formatted,
    )


@tool(
    requires=any_of("refunds:create", "refunds:create:large"),
    sensitive=("reason",),
    facts=order_facts,
    money={"amount": "currency"},
    compensation=flag_refund,
    external=External(
        provider="payments",
        plan=RefundPlan,
        prepare=hold_refund,
        call=send_refund,
        find=find_refund,
        complete=record_refund,
        release=release_refund,
    ),
)
async def refund_create(args: RefundCreateArgs, ctx: ToolContext) -> RefundPublic:
    """Refund part or all of an order to the customer. The amount is a decimal string in the order's currency and
    cannot exceed what is left unrefunded on the order."""
    amount = parse_amount(args)
    order = await locked_order(ctx, args.order_id)  # read, and locked, by the facts loader already
    _check_fits(amount, order)
    order = await add_refunded(ctx, order, amount.minor)
    refund_id = f"ref_{uuid.uuid4().hex[:20]}"
    await ctx.write(
        _ADD_REFUND,
        id=refund_id,
        order_id=order.id,
        customer_id=order.customer_id,
        amount_minor=amount.minor,
        currency=amount.currency,
        reason=args.reason,
        created_at=ctx.now,
        created_by=ctx.principal.key,
        audit_id=ctx.audit_id,
        provider_refund_id=None,
    )
    return _answer(refund_id, amount, order)


_ADD_REFUND = Statement(insert(Refund.__table__))  # type: ignore[attr-defined]
