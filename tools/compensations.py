"""How each of the store's effects is undone: the compensation planners the effect-making tools declare.

``mandate remediate`` (docs/remediation.md) asks the tool that made an effect how to undo it; these planners
answer from the store's current state (the system of record), reading only:

- an email change: restore the previous address with ``account_email_restore``, while the account still uses the
  address the change set (if it changed again since, a person must look);
- a cancellation: reopen the order with ``order_reopen``, while it is still cancelled and for at most
  :data:`REOPEN_WINDOW` after the cancellation (what the demo store allows);
- a refund: money that left cannot be pulled back automatically; ``refund_follow_up`` flags it for a person. A
  refund made at the payments provider is checked there (its status and amount, or that it is missing).

An effect that already has a :class:`~tools.store.models.Remediation` row is ``done``: a second run compensates
nothing twice.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.money import Money
from server.audit.lineage import Effect
from server.toolkit import Compensation, StoreView
from tools.customers import mask_email
from tools.store.models import AccountChange, Customer, Order, OrderStatus, Refund, Remediation

logger = logging.getLogger(__name__)

REOPEN_WINDOW = timedelta(days=30)
"""How long after a cancellation the demo store lets an order be reopened."""


async def remediation_of(session: AsyncSession, kind: str, effect_id: str, audit_id: str) -> Remediation | None:
    query = select(Remediation).where(
        Remediation.effect_kind == kind,
        Remediation.effect_id == effect_id,
        Remediation.compensates_audit_id == audit_id,
    )
    return (await session.exec(query)).first()


def _done(remediation: Remediation, state: str) -> Compensation:
    at = remediation.created_at.isoformat(timespec="seconds")
    return Compensation.done(state, f"compensated by {remediation.id} ({remediation.action}) at {at}")


async def restore_previous_email(effect: Effect, view: StoreView) -> Compensation:
    """An email change is undone by restoring the previous address, while the account still uses the new one."""
    change = await view.session.get(AccountChange, effect.id)
    if change is None or effect.audit_id is None:
        return Compensation.nothing("the change is not in the store", "nothing to restore")
    customer = await view.session.get(Customer, change.customer_id)
    if customer is None:
        return Compensation.nothing("the customer is not in the store", "nothing to restore")
    done = await remediation_of(view.session, effect.kind, change.id, effect.audit_id)
    if done is not None:
        return _done(done, f"the account uses {mask_email(customer.email)}")
    if customer.email != change.new_value:
        return Compensation.nothing(
            f"the address changed again since: the account now uses {mask_email(customer.email)}",
            "not restored automatically: check with the customer which address is theirs",
        )
    return Compensation.call(
        f"the account still uses {mask_email(change.new_value)}",
        "account_email_restore",
        {"change_id": change.id},
        f"restore the previous address {mask_email(change.old_value)}",
    )


async def reopen_cancelled_order(effect: Effect, view: StoreView) -> Compensation:
    """A cancellation is undone by reopening the order, where the store allows it."""
    order = await view.session.get(Order, effect.id)
    if order is None or effect.audit_id is None:
        return Compensation.nothing("the order is not in the store", "nothing to reopen")
    done = await remediation_of(view.session, effect.kind, order.id, effect.audit_id)
    if done is not None:
        return _done(done, f"the order is {order.status}")
    if order.status != OrderStatus.CANCELLED or order.cancel_audit_id not in (None, effect.audit_id):
        return Compensation.nothing(f"the order is {order.status} now", "nothing to reopen")
    if order.cancelled_from is None or order.cancelled_at is None:
        return Compensation.nothing(
            "the order is cancelled", "not reopened automatically: the store did not keep its status before"
        )
    if view.now - order.cancelled_at > REOPEN_WINDOW:
        return Compensation.nothing(
            f"the order is cancelled since {order.cancelled_at.isoformat(timespec='seconds')}",
            f"the store reopens an order only within {REOPEN_WINDOW.days} days of its cancellation",
        )
    return Compensation.call(
        "the order is cancelled", "order_reopen", {"order_id": order.id}, f"reopen the order as {order.cancelled_from}"
    )


async def flag_refund(effect: Effect, view: StoreView) -> Compensation:
    """A refund has no automatic reversal: it is flagged for a person to follow up. A refund made at the payments
    provider is looked up there, the system of record for it."""
    refund = await view.session.get(Refund, effect.id)
    if refund is None or effect.audit_id is None:
        return Compensation.nothing("the refund is not in the store", "nothing to follow up")
    amount = Money.from_minor(refund.amount_minor, refund.currency)
    state = f"{amount} refunded on order {refund.order_id}"
    if refund.provider_refund_id is not None:
        state = f"{state}; {await _at_provider(refund, view)}"
    done = await remediation_of(view.session, effect.kind, refund.id, effect.audit_id)
    if done is not None:
        return _done(done, state)
    return Compensation.flag(
        state,
        "refund_follow_up",
        {"refund_id": refund.id},
        "no automatic reversal: flag it for a person to follow up with the customer",
    )


async def _at_provider(refund: Refund, view: StoreView) -> str:
    """The provider's word on a refund it made: its status and amount there, or that it is missing."""
    order = await view.session.get(Order, refund.order_id)
    provider = view.providers.get("payments")
    if provider is None or order is None or order.payment_ref is None:
        return f"at the provider as {refund.provider_refund_id} (not checked: no provider configured here)"
    try:
        async for found in provider.refunds_of(order.payment_ref):
            if found.id == refund.provider_refund_id:
                return f"at the provider {found.id}: {found.status}, {found.amount}"
    except Exception:  # the state is unknown, and said to be; the plan stays a flag for a person
        logger.exception("the provider could not be asked about refund %s", refund.id)
        return f"at the provider as {refund.provider_refund_id} (the provider could not be asked)"
    return f"MISSING at the provider: no refund {refund.provider_refund_id} on payment {order.payment_ref}"
