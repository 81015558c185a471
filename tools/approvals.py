"""The approvals area: an agent follows up its own request; a human approver lists, inspects and decides.

docs/approvals.md. ``approval_status`` is for whoever can ask for an action that may need approval (the scopes of the
tools with side effects); it shows only the caller's own requests, anyone else's being "not found". The approver's
tools need ``approvals:decide`` (and, when configured, the approver claim): ``approvals_list``, ``approval_get``
and ``approval_decide``, which approves (and runs the action once, as its requester) or rejects. Separation of
duties, expiry and "a decision is final" are enforced by :class:`server.approvals.ApprovalDesk`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from scopes.requirement import all_of, any_of
from server.approvals import ApprovalDesk, ApprovalDetail, ApprovalState, ApprovalStatus, ApprovalSummary
from server.toolkit import StrictArgs, ToolContext, ToolError, tool

ApprovalId = Annotated[str, Field(pattern=r"^apr_[0-9a-f]{32}$", description="an approval id, e.g. apr_3f2a…")]


def _desk(ctx: ToolContext) -> ApprovalDesk:
    if ctx.approvals is None:
        raise ToolError("approvals_unavailable", "This server does not take approvals, so there is nothing to show.")
    return ctx.approvals


class ApprovalStatusArgs(StrictArgs):
    approval_id: ApprovalId


@tool(
    requires=any_of("refunds:create", "refunds:create:large", "orders:cancel", "accounts:write"),
    read_only=True,
)
async def approval_status(args: ApprovalStatusArgs, ctx: ToolContext) -> ApprovalState:
    """Check on an action of yours that is waiting for a human's approval: still pending, or approved and carried
    out (with its result), approved but refused when it ran, rejected (with the approver's comment), or expired."""
    ctx.approval_id = args.approval_id
    return await _desk(ctx).state(ctx.session, ctx.principal, args.approval_id, ctx.now)


class ApprovalsListArgs(StrictArgs):
    status: Literal["pending", "executed", "failed", "rejected", "expired", "any"] = "pending"
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class ApprovalList(BaseModel):
    items: list[ApprovalSummary]


@tool(requires=all_of("approvals:decide"), read_only=True)
async def approvals_list(args: ApprovalsListArgs, ctx: ToolContext) -> ApprovalList:
    """List actions waiting for a human decision (or those of another status, or "any"), newest first, with who
    asked, for which customer, and why it needs approval. Sensitive arguments are redacted here; approval_get shows
    the exact request."""
    status = None if args.status == "any" else ApprovalStatus(args.status)
    items = await _desk(ctx).listing(ctx.session, ctx.principal, status, args.limit, ctx.now)
    return ApprovalList(items=list(items))


class ApprovalGetArgs(StrictArgs):
    approval_id: ApprovalId


@tool(requires=all_of("approvals:decide"), read_only=True)
async def approval_get(args: ApprovalGetArgs, ctx: ToolContext) -> ApprovalDetail:
    """Show one approval in full: the exact arguments that will run if approved, who asked and with which scopes,
    the rule and reason that required approval, and, once decided, who decided and how the action ended."""
    ctx.approval_id = args.approval_id
    detail = await _desk(ctx).detail(ctx.session, ctx.principal, args.approval_id, ctx.now)
    ctx.customer_id = detail.customer_id
    return detail


class ApprovalDecideArgs(StrictArgs):
    approval_id: ApprovalId
    decision: Literal["approve", "reject"]
    comment: Annotated[str, Field(min_length=1, max_length=1000)] | None = None


@tool(requires=all_of("approvals:decide"), sensitive=("comment",))
async def approval_decide(args: ApprovalDecideArgs, ctx: ToolContext) -> ApprovalDetail:
    """Approve or reject an action waiting for approval. Approving runs it once, now, exactly as it was asked for
    and as the agent that asked (every other condition is checked again); the answer says how it ended. You cannot
    decide your own request, and a decision is final."""
    ctx.approval_id = args.approval_id
    detail = await _desk(ctx).decide(
        ctx.session,
        approver=ctx.principal,
        approval_id=args.approval_id,
        approve=args.decision == "approve",
        comment=args.comment,
        audit_id=ctx.audit_id,
        now=ctx.now,
    )
    ctx.customer_id = detail.customer_id  # the approver's record is found by customer, like the action's
    return detail
