"""Step 4 of a tools/call (DESIGN.md section 3; docs/policy.md): the policy's decision, taken inside the call's
transaction, and what the agent is told when it is not ``allow``.

:func:`decide_in` runs the tool's facts loader (which reads and locks the stored state), reads the ledger totals the
policy needs (locked, unless explaining), and takes the I/O-free decision (:func:`scopes.policy.prepare`: the totals
a call needs, then :func:`scopes.policy.decide`'s answer given them, without working out its rules twice). The
helpers below turn a deny, a concealed refusal or an approval into the tool result the agent reads, and a decision
into what its audit record keeps (the shadow rules that would have blocked, the rules that failed, what was spent).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import mcp_types as types
from pydantic import BaseModel

from scopes.policy import Decision, DecisionRequest, Policy, prepare
from server import ledger
from server.callpath.answers import PendingApproval, Refusal
from server.policy_runtime import caller_of
from server.toolkit import Facts, ToolContext, ToolError, ToolSpec


@dataclass(frozen=True, slots=True)
class Gate:
    """What the decision saw and said: the facts the tool's loader read, the ledger totals, the decision."""

    decision: Decision
    request: DecisionRequest
    facts: Facts | None


@dataclass(frozen=True, slots=True)
class Explanation:
    """``mandate explain``: the decision a call would get now, or the refusal it would meet before the decision."""

    gate: Gate | None = None
    refusal: Refusal | None = None


async def decide_in(
    spec: ToolSpec,
    args: BaseModel,
    policy_args: Mapping[str, Any],
    ctx: ToolContext,
    policy: Policy,
    *,
    lock: bool,
    approved: frozenset[str] = frozenset(),
) -> Gate:
    """Facts, ledger totals (held until the transaction ends when ``lock``), and the decision.

    ``approved``: rules whose ``approval`` a human granted for exactly this call (running an approved action).
    """
    facts = await spec.facts(args, ctx) if spec.facts is not None else None
    request = DecisionRequest(
        tool=spec.name,
        args=policy_args,
        caller=caller_of(ctx.principal),
        now=ctx.now,
        facts=facts.as_mapping() if facts is not None else {},
        approved=approved,
    )
    prepared = prepare(policy, request)  # ledger_needs and decide in one pass over the rules (docs/performance.md)
    if prepared.needs:
        usage = await ledger.totals(ctx.session, prepared.needs, at=ctx.now, lock=lock)
        request = replace(request, usage=usage)
    return Gate(prepared.decide(request.usage), request, facts)


def denial(decision: Decision, audit_id: str) -> Refusal:
    return Refusal(
        status="denied",
        code=decision.reason_code,
        message=decision.reason,
        rule=decision.rule_id,
        policy_version=decision.policy_version,
        would_allow=list(decision.would_allow),
        details=dict(decision.details),
        audit_id=audit_id,
    )


def concealed(gate: Gate, audit_id: str) -> Refusal:
    """Exactly the refusal a missing record gives (a tool's ``NotFound``), so it reveals nothing."""
    found: ToolError | None = gate.facts.not_found() if gate.facts is not None else None
    error = found or ToolError("not_found", "Nothing was found for these arguments.")
    return Refusal(status="failed", code=error.code, message=error.message, details=error.details, audit_id=audit_id)


def without_waiting(decision: Decision) -> Decision:
    """A read-only tool cannot wait for approval (its answers never include a pending status): refuse instead."""
    reason = f"{decision.reason} This tool cannot wait for approval, so the call is refused."
    return replace(decision, effect="deny", reason=reason)


def pending_result(pending: PendingApproval) -> types.CallToolResult:
    """An action waiting for a human: not an error, a status the model can relay and follow up."""
    data = pending.model_dump(mode="json", exclude_none=True)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=pending.message)], structured_content=data, is_error=False
    )


def audit_summary(decision: Decision, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The result summary plus what the decision adds: shadow rules that would block, failed rules, spends."""
    out = dict(summary)
    shadow = [
        {"rule": r.rule_id, "would": r.outcome, **({"code": r.code} if r.code else {})} for r in decision.shadow_blocks
    ]
    if shadow:
        out["shadow"] = shadow
    errors = [r.rule_id for r in decision.errors]
    if errors:
        out["rule_errors"] = errors
    if decision.effect == "allow" and decision.spends:
        out["spent"] = [{"budget": s.ledger.budget, "amount": s.amount, "unit": s.ledger.unit} for s in decision.spends]
    return out
