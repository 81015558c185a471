"""The security team's tools: stop an agent everywhere at once, let it go again, and see who is stopped.

They need the scope ``principals:suspend`` (docs/operations.md, "Suspensions"). A suspension names a client id, a
subject, a tenant or one token (its ``jti``), optionally of one issuer; it takes effect on every replica within a
second. A reason is required both ways; the call's own audit record keeps it (with who did it), and the suspension row
names that record. ``principal_resume`` also ends suspensions a circuit breaker made (by ``suspension_id``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from scopes.requirement import all_of
from server.toolkit import (
    StrictArgs,
    Suspension,
    SuspensionError,
    Target,
    ToolContext,
    ToolError,
    active_suspensions,
    resume_suspension,
    suspend_target,
    tool,
)

Kind = Literal["client", "subject", "tenant", "token", "principal"]
Reason = Annotated[str, Field(min_length=3, max_length=1000, description="why: recorded and shown to responders")]


class SuspensionView(BaseModel):
    suspension_id: str
    kind: str
    value: str
    issuer: str | None
    reason: str
    source: str = Field(description="manual, or breaker:<id> when a circuit breaker suspended it")
    suspended_by: str
    suspended_at: str
    resumed_at: str | None = None
    resumed_by: str | None = None
    resume_reason: str | None = None


def _view(row: Suspension) -> SuspensionView:
    return SuspensionView(
        suspension_id=row.id,
        kind=row.kind,
        value=row.value,
        issuer=row.issuer,
        reason=row.reason,
        source=row.source,
        suspended_by=row.suspended_by,
        suspended_at=row.suspended_at.isoformat(),
        resumed_at=row.resumed_at.isoformat() if row.resumed_at else None,
        resumed_by=row.resumed_by,
        resume_reason=row.resume_reason,
    )


def _actor(ctx: ToolContext) -> str:
    return f"{ctx.principal.subject} via {ctx.principal.client_id}"


class SuspendArgs(StrictArgs):
    kind: Kind
    value: Annotated[str, Field(min_length=1, max_length=400, description="the client id, subject, tenant or jti")]
    issuer: Annotated[str, Field(min_length=1, max_length=400)] | None = None
    reason: Reason


class Suspended(BaseModel):
    created: bool = Field(description="false when it was already suspended (the existing suspension is shown)")
    suspension: SuspensionView


@tool(requires=all_of("principals:suspend"), idempotent=True)
async def principal_suspend(args: SuspendArgs, ctx: ToolContext) -> Suspended:
    """Suspend an agent at once on every replica: a client id, a subject, a tenant or one token (jti). It then sees
    no tools, each of its calls is refused with the code "suspended", and its pending approvals cannot be approved,
    until someone resumes it. A reason is required and recorded."""
    try:
        target = Target(args.kind, args.value, args.issuer)
        row, created = await suspend_target(
            ctx.session, target, reason=args.reason, by=_actor(ctx), now=ctx.now, audit_id=ctx.audit_id
        )
    except SuspensionError as exc:
        raise ToolError("invalid_suspension", str(exc)) from None
    return Suspended(created=created, suspension=_view(row))


class ResumeArgs(StrictArgs):
    kind: Kind | None = None
    value: Annotated[str, Field(min_length=1, max_length=400)] | None = None
    issuer: Annotated[str, Field(min_length=1, max_length=400)] | None = None
    suspension_id: Annotated[str, Field(pattern=r"^sus_[0-9a-f]{32}$")] | None = None
    reason: Reason


class Resumed(BaseModel):
    resumed: list[SuspensionView]


@tool(requires=all_of("principals:suspend"), idempotent=True)
async def principal_resume(args: ResumeArgs, ctx: ToolContext) -> Resumed:
    """End a suspension: name it by kind and value (as it was suspended) or by suspension_id (e.g. one a circuit
    breaker made). A reason is required and recorded."""
    if (args.suspension_id is None) == (args.kind is None or args.value is None):
        raise ToolError("invalid_resume", "Give either suspension_id, or kind and value; nothing was changed.")
    try:
        target: Target | str = (
            args.suspension_id
            if args.suspension_id is not None
            else Target(str(args.kind), str(args.value), args.issuer)
        )
        ended = await resume_suspension(
            ctx.session, target, reason=args.reason, by=_actor(ctx), now=ctx.now, audit_id=ctx.audit_id
        )
    except SuspensionError as exc:
        raise ToolError("invalid_resume", str(exc)) from None
    if not ended:
        raise ToolError("not_suspended", "No active suspension matches; nothing was changed.")
    return Resumed(resumed=[_view(row) for row in ended])


class SuspensionsArgs(StrictArgs):
    pass


class SuspensionList(BaseModel):
    items: list[SuspensionView]


@tool(requires=all_of("principals:suspend"), read_only=True)
async def suspensions_list(args: SuspensionsArgs, ctx: ToolContext) -> SuspensionList:
    """List the active suspensions, oldest first: whom, why, by whom (a person or a circuit breaker) and since when."""
    return SuspensionList(items=[_view(row) for row in await active_suspensions(ctx.session)])
