"""Running an approved action (docs/approvals.md; :class:`server.approvals.desk.ActionRunner`): the action a human
approved runs once, as its requester, with exactly the arguments the approval was bound to.

The stored arguments (checked against the digest the approval was bound to) are admitted again, the policy decides
again with the rules that required approval waived for this action only (every other condition, ledger totals
included, is checked against the current state), then the ledger, the effect and the audit record (with the approval
id) are written in a savepoint of the approver's transaction. A refusal now rolls the savepoint back and is recorded
as a failed run; only an internal failure raises (and the approver's whole transaction with it). An effect at
an outside system writes its intent there instead, and its provider call runs once that transaction has committed
(:mod:`server.callpath.act_external`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scopes.policy import Decision
from server import ledger
from server.approvals.store import requester_principal, stored_arguments
from server.audit import chain
from server.audit.chain import NewRecord
from server.callpath.act_external import carry_out, start
from server.callpath.admit import Admitted, Rejected, admit
from server.callpath.answers import Refusal
from server.callpath.core import CallPathCore, after_commit, new_audit_id
from server.callpath.decide import concealed, decide_in, denial
from server.callpath.record import (
    CallInfo,
    Invocation,
    Outcome,
    decided_outcome,
    refusal_result,
    result_summary,
    success_result,
)
from server.storage.prepared import Savepoint, begin_savepoint
from server.toolkit import ToolContext, ToolError

logger = logging.getLogger("server.callpath")

if TYPE_CHECKING:
    from sqlmodel.ext.asyncio.session import AsyncSession

    from server.approvals.desk import Execution
    from server.approvals.models import Approval


async def run_approved(core: CallPathCore, session: AsyncSession, approval: Approval, now: datetime) -> Execution:
    """Run an approved action once, as its requester, inside the approver's transaction."""
    from server.approvals.desk import Execution

    audit_id = new_audit_id()
    principal = requester_principal(approval)
    info = CallInfo(transport="approval", request_id=approval.id, idempotency_key=approval.idempotency_key)
    tool = approval.tool
    call = Invocation(principal, info, tool, {}, core.sensitive(tool))
    if core.approvals is None or not core.approvals.seal.verify(approval):
        # the stored action is not the one that was sealed when it was requested (server.approvals.seal)
        logger.error("approval %s does not match its seal: it was changed in the database; it is not run", approval.id)
        refusal = Refusal(
            status="failed",
            code="approval_tampered",
            message="This approval was changed after it was requested (it no longer matches its seal), so nothing "
            "was done. Ask for the action again.",
        )
        return await failed_run(core, session, approval, call, refusal, audit_id, now)
    try:
        arguments = stored_arguments(approval)
    except ValueError as exc:
        refusal = Refusal(status="failed", code="approval_arguments_changed", message=f"{exc}; nothing was done.")
        return await failed_run(core, session, approval, call, refusal, audit_id, now)
    call = replace(call, raw=arguments)
    admitted = admit(core.catalog, principal, tool, dict(arguments))
    if isinstance(admitted, Rejected):
        return await failed_run(core, session, approval, call, admitted.refusal, audit_id, now)
    spec = admitted.entry.spec
    waived = frozenset(approval.waived_rules.split())
    savepoint = await begin_savepoint(session)
    try:
        ctx = core.context(principal, session, now, audit_id, tool)
        policy = core.policies.current()
        gate = await decide_in(spec, admitted.args, admitted.policy_args, ctx, policy, lock=True, approved=waived)
        decision = gate.decision
        if decision.effect != "allow":
            await savepoint.rollback()
            if decision.conceal:
                refusal = concealed(gate, audit_id)
            else:
                refusal = denial(decision, audit_id)
                if decision.effect == "approval":
                    refusal = refusal.model_copy(
                        update={"message": f"{decision.reason} It needs another approval, so nothing was done."}
                    )
            return await failed_run(core, session, approval, call, refusal, audit_id, now, decision)
        await ledger.reserve(session, decision.spends, at=now, audit_id=audit_id, tool=tool)
        external = spec.external
        provider = core.providers.get(external.provider) if external is not None else None
        if external is not None and provider is not None:
            return await _start_external(core, session, savepoint, approval, call, admitted, ctx, decision, provider)
        result = await spec.handler(admitted.args, ctx)
        outcome = decided_outcome(
            "allow", "succeeded", decision, result_summary(result), ctx.customer_id or approval.customer_id
        )
        outcome.approval_id = approval.id
        await chain.append(session, core.record(call, outcome, audit_id, now))
        await savepoint.commit()
        return Execution(succeeded=True, result=success_result(result), audit_id=audit_id)
    except ToolError as exc:
        if savepoint.is_active:
            await savepoint.rollback()
        refusal = Refusal(status="failed", code=exc.code, message=exc.message, details=exc.details)
        return await failed_run(core, session, approval, call, refusal, audit_id, now)


async def _start_external(
    core: CallPathCore,
    session: AsyncSession,
    savepoint: Savepoint,
    approval: Approval,
    call: Invocation,
    admitted: Admitted,
    ctx: ToolContext,
    decision: Decision,
    provider: Any,
) -> Execution:
    """An approved effect at an outside system: (a) commits with the approver's decision; the provider is called
    only after that transaction has committed (docs/effects.md, "Approved actions"), and the approval's result is
    brought up to date when the outcome is written."""
    from server.approvals.desk import Execution

    external = admitted.entry.spec.external
    assert external is not None
    ctx.approval_id = approval.id
    ctx.customer_id = ctx.customer_id or approval.customer_id

    def record(outcome: Outcome) -> NewRecord:
        return core.record(call, outcome, ctx.audit_id, ctx.now)

    intent, answer = await start(core, session, ctx, decision, record, admitted, call, None, provider)
    await savepoint.commit()

    async def later() -> object:
        return await carry_out(core, intent, external, provider, call)

    after_commit(session, later)
    return Execution(succeeded=True, result=answer, audit_id=ctx.audit_id)


async def failed_run(
    core: CallPathCore,
    session: AsyncSession,
    approval: Approval,
    call: Invocation,
    refusal: Refusal,
    audit_id: str,
    now: datetime,
    decision: Decision | None = None,
) -> Execution:
    """Record an approved action that was refused when it ran (in the approver's transaction) and answer."""
    from server.approvals.desk import Execution

    message = f"Approved, but refused when it ran: {refusal.message}"
    outcome = (
        decided_outcome("deny", "failed", decision, {"error": refusal.code}, approval.customer_id)
        if decision is not None
        else Outcome("allow", "failed", refusal.code, refusal.message, summary={"error": refusal.code})
    )
    outcome.customer_id = outcome.customer_id or approval.customer_id
    outcome.approval_id = approval.id
    await chain.append(session, core.record(call, outcome, audit_id, now))
    answer = refusal_result(refusal.model_copy(update={"message": message, "audit_id": audit_id}))
    return Execution(succeeded=False, result=answer, audit_id=audit_id, code=refusal.code, message=message)
