"""Step 5 when the decision is not ``allow`` (DESIGN.md section 3): a deny, a concealed refusal or an approval is
recorded in the call's transaction, which changes nothing else, and answered (docs/policy.md, docs/approvals.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import mcp_types as types

from server.audit import chain
from server.audit.chain import NewRecord
from server.audit.redaction import arguments_digest
from server.callpath.core import CallPathCore
from server.callpath.decide import Gate, concealed, denial, pending_result, without_waiting
from server.callpath.pending import PendingAction
from server.callpath.record import Invocation, Outcome, decided_outcome, refusal_result
from server.toolkit import ToolContext

logger = logging.getLogger("server.callpath")


async def refuse(
    core: CallPathCore,
    session: Any,
    gate: Gate,
    ctx: ToolContext,
    call: Invocation,
    record: Callable[[Outcome], NewRecord],
) -> tuple[types.CallToolResult, str]:
    """A deny or an approval: record it in the call's transaction (which changes nothing else) and answer."""
    decision, audit_id = gate.decision, ctx.audit_id
    if decision.conceal:
        await chain.append(session, record(decided_outcome("deny", "refused", decision, {}, ctx.customer_id)))
        return refusal_result(concealed(gate, audit_id)), "deny"
    entry = core.catalog.get(ctx.tool_name)
    if decision.effect == "approval" and entry is not None and entry.spec.read_only:
        decision = without_waiting(decision)
    if decision.effect == "approval" and core.approvals is None:
        decision = replace(
            decision,
            effect="deny",
            reason_code="approvals_unavailable",
            reason=f"{decision.reason} This server takes no approvals, so the call is refused.",
        )
    if decision.effect == "approval" and core.guards is not None:
        decision = await core.guards.within_open_approvals(session, ctx.principal, decision)
    if decision.effect == "approval" and core.approvals is not None:
        outcome = decided_outcome("approval", "pending_approval", decision, {}, ctx.customer_id)
        pending = await core.approvals.request(
            session,
            PendingAction(
                audit_id=audit_id,
                principal=ctx.principal,
                tool=ctx.tool_name,
                arguments=dict(call.raw),
                arguments_digest=arguments_digest(call.raw),
                decision=decision,
                requested_at=ctx.now,
                customer_id=ctx.customer_id,
                idempotency_key=call.info.idempotency_key,
            ),
        )
        outcome.approval_id = pending.approval_id
        await chain.append(session, record(outcome))
        return pending_result(pending), "approval"
    if decision.error:
        logger.error("policy %s: %s", decision.policy_version, decision.audit_reason)
    kind = "error" if decision.error else "deny"
    await chain.append(session, record(decided_outcome(kind, "refused", decision, {}, ctx.customer_id)))
    return refusal_result(denial(decision, audit_id)), "deny"
