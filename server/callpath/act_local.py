"""Step 5 for ``allow`` when the effect is local (DESIGN.md section 3): in ONE database transaction the decision,
the ledger reservation, the tool's effect, the stored idempotency answer and the audit record commit together, or
none of them does. A tool's refusal (:class:`~server.toolkit.ToolError`) rolls the effect back and is recorded as a
failed call; any other failure is an internal error (fail closed).

:func:`decide_and_act` is that transaction with the effect left open: :func:`act_local` runs the tool's function
in it, :mod:`server.callpath.act_external` writes an intent instead (docs/effects.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import mcp_types as types

from scopes.policy import Decision
from server import idempotency, ledger
from server.audit import chain
from server.audit.chain import NewRecord
from server.audit.receipt import receipt_meta
from server.auth.principal import Principal
from server.callpath import guard
from server.callpath.admit import Admitted
from server.callpath.answers import Refusal
from server.callpath.core import AFTER_COMMIT, CallPathCore, new_audit_id
from server.callpath.record import Invocation, Outcome, decided_outcome, refusal_result, result_summary, success_result
from server.callpath.refuse import refuse
from server.toolkit import ToolContext, ToolError

logger = logging.getLogger("server.callpath")

Record = Callable[[Outcome], NewRecord]
Effect = Callable[[Any, ToolContext, Decision, Record], Awaitable[types.CallToolResult]]
"""The effect of an allowed call, in its transaction after the ledger reservation: ``(session, ctx, decision,
record) -> answer``; it writes the audit record (``record``) and completes the idempotency claim itself."""


async def act_local(
    core: CallPathCore,
    admitted: Admitted,
    principal: Principal,
    call: Invocation,
    claimed: idempotency.Claimed | None,
) -> tuple[types.CallToolResult, str]:
    """Decide and act in one transaction; the answer and the kind of decision (``allow``, ``deny``, ...)."""
    spec = admitted.entry.spec

    async def effect(session: Any, ctx: ToolContext, decision: Decision, record: Record) -> types.CallToolResult:
        result = (await spec.handler(admitted.args, ctx)).model_dump(mode="json")  # dumped once, for both uses
        outcome = decided_outcome("allow", "succeeded", decision, result_summary(result), ctx.customer_id)
        outcome.approval_id = ctx.approval_id
        await chain.append(session, record(outcome))
        answer = success_result(result, meta=None if spec.read_only else receipt_meta(ctx.audit_id))
        if claimed is not None:  # the stored answer commits with the effect, or neither does
            await idempotency.complete(session, claimed, answer, ctx.audit_id)
        return answer

    answer, kind, _ = await decide_and_act(core, admitted, principal, call, claimed, effect)
    return answer, kind


async def decide_and_act(
    core: CallPathCore,
    admitted: Admitted,
    principal: Principal,
    call: Invocation,
    claimed: idempotency.Claimed | None,
    effect: Effect,
    *,
    audit_id: str | None = None,
    now: datetime | None = None,
) -> tuple[types.CallToolResult, str, bool]:
    """The decision's transaction around ``effect``: the answer, the kind of decision, and whether ``effect`` ran
    and its transaction committed. Work the transaction deferred (:func:`server.callpath.core.after_commit`) runs
    once it has committed."""
    spec = admitted.entry.spec
    audit_id = audit_id or new_audit_id()
    now = now or core.clock()
    decided: list[Decision] = []
    contexts: list[ToolContext] = []
    stored: list[bool] = []  # the answer was stored with the key in the call's transaction
    acted: list[bool] = []
    deferred: list[Callable[[], Awaitable[object]]] = []

    def record(outcome: Outcome) -> NewRecord:
        return core.record(call, outcome, audit_id, now)

    async def work(session: Any) -> tuple[types.CallToolResult, str]:
        decided.clear()
        stored.clear()
        acted.clear()
        deferred.clear()
        session.info.pop(AFTER_COMMIT, None)
        ctx = core.context(principal, session, now, audit_id, spec.name)
        contexts[:] = [ctx]
        gate = await core.gate(admitted, ctx, lock=True)
        decision = gate.decision
        decided.append(decision)
        guard.note_decision(decision)
        if decision.effect != "allow":
            answer, kind = await refuse(core, session, gate, ctx, call, record)
            # A retry with the key follows the same approval; a concealed refusal is stored exactly like the
            # "not found" it imitates (a tool refusal), so a retry cannot tell the two apart.
            if claimed is not None and (kind == "approval" or decision.conceal):
                await idempotency.complete(session, claimed, answer, audit_id)
                stored.append(True)
            return answer, kind
        await ledger.reserve(session, decision.spends, at=now, audit_id=audit_id, tool=spec.name)
        answer = await effect(session, ctx, decision, record)
        acted.append(True)
        deferred.extend(session.info.pop(AFTER_COMMIT, []))
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
            return (*await core.internal_error(call, audit_id), False)
        return answer, "allow", False
    except Exception:
        logger.exception("tool %s failed; its transaction was rolled back", spec.name)
        await core.release(claimed)
        return (*await core.internal_error(call, audit_id), False)
    if claimed is not None and not stored and kind in ("deny", "error"):  # nothing happened: a retry runs anew
        await core.release(claimed)
    for later in deferred:
        try:
            await later()
        except Exception:  # what it left unresolved is the reconciler's (docs/effects.md)
            logger.exception("work deferred until after a %s call committed failed", spec.name)
    return answer, kind, bool(acted)
