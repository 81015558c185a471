"""Step 5 for ``allow`` when the effect is local (DESIGN.md section 3): in ONE database transaction the decision,
the ledger reservation, the tool's effect, the stored idempotency answer and the audit record commit together, or
none of them does. A tool's refusal (:class:`~server.toolkit.ToolError`) rolls the effect back and is recorded as a
failed call; any other failure is an internal error (fail closed).
"""

from __future__ import annotations

import logging
from typing import Any

import mcp_types as types

from scopes.policy import Decision
from server import idempotency, ledger
from server.audit import chain
from server.audit.models import AuditRecord
from server.auth.principal import Principal
from server.callpath.admit import Admitted
from server.callpath.answers import Refusal
from server.callpath.core import CallPathCore, new_audit_id
from server.callpath.record import Invocation, Outcome, decided_outcome, refusal_result, result_summary, success_result
from server.callpath.refuse import refuse
from server.toolkit import ToolContext, ToolError

logger = logging.getLogger("server.callpath")


async def act_local(
    core: CallPathCore,
    admitted: Admitted,
    principal: Principal,
    call: Invocation,
    claimed: idempotency.Claimed | None,
) -> tuple[types.CallToolResult, str]:
    """Decide and act in one transaction; the answer and the kind of decision (``allow``, ``deny``, ...)."""
    spec = admitted.entry.spec
    audit_id = new_audit_id()
    now = core.clock()
    decided: list[Decision] = []
    contexts: list[ToolContext] = []
    stored: list[bool] = []  # the answer was stored with the key in the call's transaction

    def record(outcome: Outcome) -> AuditRecord:
        return core.record(call, outcome, audit_id, now)

    async def work(session: Any) -> tuple[types.CallToolResult, str]:
        decided.clear()
        stored.clear()
        ctx = core.context(principal, session, now, audit_id, spec.name)
        contexts[:] = [ctx]
        gate = await core.gate(admitted, ctx, lock=True)
        decision = gate.decision
        decided.append(decision)
        if decision.effect != "allow":
            answer, kind = await refuse(core, session, gate, ctx, call, record)
            # A retry with the key follows the same approval; a concealed refusal is stored exactly like the
            # "not found" it imitates (a tool refusal), so a retry cannot tell the two apart.
            if claimed is not None and (kind == "approval" or decision.conceal):
                await idempotency.complete(session, claimed, answer, audit_id)
                stored.append(True)
            return answer, kind
        await ledger.reserve(session, decision.spends, at=now, audit_id=audit_id, tool=spec.name)
        result = await spec.handler(admitted.args, ctx)
        outcome = decided_outcome("allow", "succeeded", decision, result_summary(result), ctx.customer_id)
        outcome.approval_id = ctx.approval_id
        await chain.append(session, record(outcome))
        answer = success_result(result)
        if claimed is not None:  # the stored answer commits with the effect, or neither does
            await idempotency.complete(session, claimed, answer, audit_id)
        return answer, "allow"

    try:
        answer, kind = await core.db.run_in_transaction(work)
    except ToolError as exc:
        decision = decided[-1] if decided else None
        outcome = Outcome(
            "allow",
            "failed",
            exc.code,
            exc.message,
            policy_version=decision.policy_version if decision else None,
            summary={"error": exc.code},
        )
        if contexts:  # what the tool had set before it refused (the approval it acted on)
            outcome.approval_id = contexts[-1].approval_id
            outcome.customer_id = contexts[-1].customer_id
        refusal = Refusal(status="failed", code=exc.code, message=exc.message, details=exc.details, audit_id=audit_id)
        answer = refusal_result(refusal)
        try:
            await core.record_alone(call, outcome, audit_id=audit_id, claimed=(claimed, answer))
        except Exception:
            logger.exception("the refusal of a %s call could not be recorded; the call is refused", spec.name)
            await core.release(claimed)
            return await core.internal_error(call, audit_id)
        return answer, "allow"
    except Exception:
        logger.exception("tool %s failed; its transaction was rolled back", spec.name)
        await core.release(claimed)
        return await core.internal_error(call, audit_id)
    if claimed is not None and not stored and kind in ("deny", "error"):  # nothing happened: a retry runs anew
        await core.release(claimed)
    return answer, kind
