"""Compensating actions: the tools ``mandate remediate`` runs to undo what a misbehaving agent did.

Each needs the ``remediation:execute`` scope and a person's token (the approver marker that approvals use, when one
is configured: docs/approvals.md), goes through the same enforcement as any call (policy, approval, audit), and
writes one :class:`~tools.store.models.Remediation` row naming the audit record of the effect it compensates
(lineage), unique per effect, so compensating twice is refused and changes nothing:

- ``account_email_restore`` puts back the address an email change replaced, while the account still uses the new one;
- ``order_reopen`` reopens a cancelled order with the status it had, within the store's reopening window;
- ``refund_follow_up`` flags a refund for a person to follow up (a refund has no automatic reversal).

How each effect is planned is in :mod:`tools.compensations`.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from scopes.requirement import all_of
from server.approvals.authority import is_approver
from server.toolkit import NotFound, StrictArgs, ToolContext, ToolError, tool
from tools.compensations import REOPEN_WINDOW, remediation_of
from tools.customers import mask_email
from tools.orders import OrderId
from tools.store.access import get_customer, get_order
from tools.store.models import AccountChange, OrderStatus, Refund, Remediation

Reason = Annotated[str, Field(min_length=3, max_length=500, description="why, for the record (the incident)")]


class Remediated(BaseModel):
    remediation_id: str
    effect_kind: str
    effect_id: str
    compensates_audit_id: str = Field(description="the audit record of the invocation whose effect this undoes")
    action: str
    detail: str
    audit_id: str = Field(description="the audit record of this compensating call")


def _require_person(ctx: ToolContext) -> None:
    settings = ctx.approvals.settings if ctx.approvals is not None else None
    if settings is None or not is_approver(ctx.principal, settings):
        raise ToolError(
            "not_a_person",
            "Compensating actions are run by a person: this token is not marked as one (the approver claim), so "
            "nothing was changed.",
        )


async def _not_yet_compensated(ctx: ToolContext, kind: str, effect_id: str, compensates: str) -> None:
    if await remediation_of(ctx.session, kind, effect_id, compensates) is not None:
        raise ToolError("already_compensated", f"This {kind.replace('_', ' ')} was already compensated; nothing more.")


async def _record(ctx: ToolContext, kind: str, effect_id: str, compensates: str, action: str, note: str) -> Remediation:
    """The remediation row; its unique constraint settles a race between two people compensating one effect."""
    remediation = Remediation(
        id=f"rem_{uuid.uuid4().hex[:20]}",
        effect_kind=kind,
        effect_id=effect_id,
        compensates_audit_id=compensates,
        action=action,
        note=note,
        created_at=ctx.now,
        created_by=ctx.principal.key,
        audit_id=ctx.audit_id,
    )
    ctx.session.add(remediation)
    try:
        await ctx.session.flush()
    except IntegrityError:  # a concurrent remediation of the same effect won
        raise ToolError("already_compensated", "This effect was compensated meanwhile; nothing more.") from None
    return remediation


def _answer(remediation: Remediation, detail: str) -> Remediated:
    return Remediated(
        remediation_id=remediation.id,
        effect_kind=remediation.effect_kind,
        effect_id=remediation.effect_id,
        compensates_audit_id=remediation.compensates_audit_id,
        action=remediation.action,
        detail=detail,
        audit_id=remediation.audit_id,
    )


class EmailRestoreArgs(StrictArgs):
    change_id: Annotated[str, Field(pattern=r"^acc_[0-9a-f]{1,36}$", description="the email change to undo")]
    reason: Reason


@tool(requires=all_of("remediation:execute"), idempotent=True, sensitive=("reason",))
async def account_email_restore(args: EmailRestoreArgs, ctx: ToolContext) -> Remediated:
    """Undo an email change: put back the address it replaced, if the account still uses the address it set."""
    _require_person(ctx)
    change = await ctx.session.get(AccountChange, args.change_id)
    if change is None or change.field_name != "email":
        raise NotFound("email change", args.change_id)
    customer = await get_customer(ctx, change.customer_id)
    await _not_yet_compensated(ctx, "account_change", change.id, change.audit_id)
    if customer.email != change.new_value:
        raise ToolError(
            "changed_since",
            f"The account no longer uses the address that change set (it uses {mask_email(customer.email)}), so it "
            "was not restored; check with the customer.",
        )
    remediation = await _record(ctx, "account_change", change.id, change.audit_id, "restored_email", args.reason)
    restore = AccountChange(
        id=f"acc_{uuid.uuid4().hex[:20]}",
        customer_id=customer.id,
        field_name="email",
        old_value=customer.email,
        new_value=change.old_value,
        created_at=ctx.now,
        created_by=ctx.principal.key,
        audit_id=ctx.audit_id,
    )
    customer.email = change.old_value
    ctx.session.add(customer)
    ctx.session.add(restore)
    await ctx.session.flush()
    return _answer(remediation, f"restored {mask_email(change.old_value)} on customer {customer.id}")


class OrderReopenArgs(StrictArgs):
    order_id: OrderId
    reason: Reason


@tool(requires=all_of("remediation:execute"), idempotent=True, sensitive=("reason",))
async def order_reopen(args: OrderReopenArgs, ctx: ToolContext) -> Remediated:
    """Undo a cancellation: reopen a cancelled order with the status it had, within the store's reopening window."""
    _require_person(ctx)
    order = await get_order(ctx, args.order_id, for_update=True)
    if order.status != OrderStatus.CANCELLED or order.cancelled_at is None or order.cancel_audit_id is None:
        raise ToolError("not_cancelled", f"Order {order.id} is {order.status}; there is no cancellation to undo.")
    if order.cancelled_from is None:
        raise ToolError(
            "status_unknown", f"The store did not keep the status order {order.id} had before it was cancelled."
        )
    if ctx.now - order.cancelled_at > REOPEN_WINDOW:
        raise ToolError(
            "reopen_window_passed",
            f"Order {order.id} was cancelled more than {REOPEN_WINDOW.days} days ago; the store no longer reopens it.",
        )
    await _not_yet_compensated(ctx, "order_cancellation", order.id, order.cancel_audit_id)
    reopened_as = order.cancelled_from
    remediation = await _record(
        ctx, "order_cancellation", order.id, order.cancel_audit_id, "reopened_order", args.reason
    )
    order.status = OrderStatus(reopened_as)
    order.cancelled_at = None
    order.cancel_reason = None
    order.cancelled_from = None
    order.cancel_audit_id = None
    ctx.session.add(order)
    await ctx.session.flush()
    return _answer(remediation, f"order {order.id} is {reopened_as} again")


class RefundFollowUpArgs(StrictArgs):
    refund_id: Annotated[str, Field(pattern=r"^ref_[0-9A-Za-z_]{1,60}$", description="the refund to follow up")]
    reason: Reason


@tool(requires=all_of("remediation:execute"), idempotent=True, sensitive=("reason",))
async def refund_follow_up(args: RefundFollowUpArgs, ctx: ToolContext) -> Remediated:
    """Flag a refund for a person to follow up: a refund cannot be reversed automatically."""
    _require_person(ctx)
    refund = await ctx.session.get(Refund, args.refund_id)
    if refund is None:
        raise NotFound("refund", args.refund_id)
    await get_order(ctx, refund.order_id)  # tenancy: another tenant's refund is not found
    await _not_yet_compensated(ctx, "refund", refund.id, refund.audit_id)
    remediation = await _record(ctx, "refund", refund.id, refund.audit_id, "follow_up", args.reason)
    return _answer(remediation, f"refund {refund.id} flagged for follow-up")
