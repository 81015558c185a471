"""Step (c) of the intent protocol (docs/effects.md): how an intent is resolved, exactly once, in one transaction.

:func:`succeed` (the provider made its object) runs the tool's ``complete`` (the local rows), writes the outcome's
audit record linked to the intent (its summary names the intent, the intent's record and the provider's object),
stores the final answer on the intent, with the agent's idempotency key and on the approval it carried out.
:func:`fail` (the provider definitely did not) releases the ledger reservation (:mod:`server.effects.budget`) and
the tool's own holds (``release``), and records the failure with its reason the same way.

Both lock the intent row first and act only if it is still ``started``: the call that made the request and any
number of reconcilers may race to resolve it, and exactly one wins; the others get the winner's answer. An object
that turns up for an intent already resolved as failed (the provider acted after Mandate could no longer expect it
to) marks the intent ``conflict`` with an audit record, for a person and ``mandate reconcile payments``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import mcp_types as types
from sqlalchemy import bindparam, update
from sqlmodel.ext.asyncio.session import AsyncSession

from server import idempotency
from server.approvals import store as approvals_store
from server.audit import chain
from server.audit.receipt import with_receipt
from server.callpath.answers import Refusal
from server.callpath.core import new_audit_id
from server.callpath.record import CallInfo, Invocation, Outcome, refusal_result, result_summary, success_result
from server.effects import budget
from server.effects.intents import EFFECT_META, get_locked, principal_of, stored_arguments
from server.effects.models import COMPLETED, CONFLICT, FAILED, RESOLUTION, STARTED, TABLE, Intent
from server.storage.prepared import Prepared, defer
from server.toolkit import External, ProviderObject, ToolContext

if TYPE_CHECKING:
    from server.callpath.core import CallPathCore

logger = logging.getLogger("server.effects")

RESOLVED_BY_CALL = "call"
RESOLVED_BY_RECONCILER = "reconciler"

_RESOLVE = Prepared(
    update(TABLE)
    .where(TABLE.c.id == bindparam("k_id"), TABLE.c.status == bindparam("k_was"))
    .values({name: bindparam(f"k_{name}", type_=TABLE.c[name].type) for name in RESOLUTION})
)
"""Writes an intent's resolution columns, if its status is still the one its lock read."""

Act = Callable[[AsyncSession, Intent, "Invocation", str], Awaitable[tuple[types.CallToolResult, Intent]]]
Late = Callable[[AsyncSession, Intent, "Invocation"], Awaitable[Intent]]


class ToolGone(RuntimeError):
    """The intent's tool is no longer in the catalog (or no longer external): it cannot be completed here."""


def external_of(core: CallPathCore, tool: str) -> External:
    entry = core.catalog.get(tool)
    if entry is None or entry.spec.external is None:
        raise ToolGone(f"tool {tool!r} is not an external effect in this server's catalog")
    return entry.spec.external


def invocation_of(core: CallPathCore, intent: Intent, resolver: str) -> Invocation:
    """The invocation an outcome's record describes, rebuilt from the intent (a reconciler has no request)."""
    transport = intent.transport if resolver == RESOLVED_BY_CALL else "reconciler"
    info = CallInfo(transport=transport, request_id=intent.request_id, idempotency_key=intent.call_key)
    return Invocation(principal_of(intent), info, intent.tool, stored_arguments(intent), core.sensitive(intent.tool))


def with_effect_meta(answer: types.CallToolResult, intent: Intent, status: str) -> types.CallToolResult:
    meta = dict(answer.meta or {})
    meta[EFFECT_META] = {
        "intent_id": intent.id,
        "provider": intent.provider_name,
        "status": status,
        "object_id": intent.provider_object_id,
    }
    return answer.model_copy(update={"meta": meta})


async def _locked(session: AsyncSession, intent_id: str) -> Intent:
    found = await get_locked(session, intent_id)
    if found is None:  # pragma: no cover - intents are never deleted
        raise LookupError(f"no intent {intent_id}")
    return found


async def write_resolution(session: AsyncSession, intent: Intent, was: str) -> None:
    """Store ``intent``'s resolution; the row must still have status ``was`` (it is locked, so it has)."""
    values = {f"k_{name}": getattr(intent, name) for name in RESOLUTION}
    values["k_id"], values["k_was"] = intent.id, was
    await defer(session, _RESOLVE, values, expect=1)


async def _store_answer(
    session: AsyncSession,
    intent: Intent,
    answer: types.CallToolResult,
    audit_id: str,
    *,
    now: datetime,
    ok: bool,
    code: str | None,
    message: str | None,
) -> Intent:
    """The final answer where a retry finds it: the intent (returned, to be written), the agent's idempotency key,
    the approval."""
    text = answer.model_dump_json(by_alias=True, exclude_none=True)
    connection = await session.connection()
    if intent.call_key_id is not None:
        await connection.execute(
            update(idempotency.TABLE)
            .where(idempotency.TABLE.c.id == intent.call_key_id, idempotency.TABLE.c.status == idempotency.COMPLETED)
            .values(result=idempotency.stored_form(answer), audit_id=audit_id)
        )
    if intent.approval_id is not None:
        await approvals_store.record_execution(
            session,
            intent.approval_id,
            succeeded=ok,
            result_json=text,
            audit_id=audit_id,
            code=code,
            message=message,
            now=now,
        )
    return replace(intent, answer=text)


async def _resolve(
    core: CallPathCore,
    intent_id: str,
    resolver: str,
    call: Invocation | None,
    act: Act,
    late: Late | None = None,
) -> types.CallToolResult:
    async def work(session: AsyncSession) -> types.CallToolResult:
        intent = await _locked(session, intent_id)
        invocation = call or invocation_of(core, intent, resolver)
        if intent.status != STARTED:
            if late is not None and intent.status == FAILED:
                await write_resolution(session, await late(session, intent, invocation), FAILED)
            if intent.answer is None:  # pragma: no cover - a resolved intent always has its answer
                raise LookupError(f"intent {intent_id} is {intent.status} without an answer")
            return types.CallToolResult.model_validate_json(intent.answer)
        answer, resolved = await act(session, intent, invocation, new_audit_id())
        await write_resolution(session, resolved, STARTED)
        return answer

    return await core.db.run_in_transaction(work)


async def succeed(
    core: CallPathCore, intent_id: str, made: ProviderObject, *, resolver: str, call: Invocation | None = None
) -> types.CallToolResult:
    """The provider made ``made``: complete the intent (see the module docstring); the final answer."""

    async def act(
        session: AsyncSession, intent: Intent, invocation: Invocation, audit_id: str
    ) -> tuple[types.CallToolResult, Intent]:
        now = core.clock()
        external = external_of(core, intent.tool)
        intent = replace(
            intent,
            status=COMPLETED,
            resolved_at=now,
            resolved_by=resolver,
            outcome_audit_id=audit_id,
            provider_object_id=made.id,
            amount_minor=made.amount.minor,
            currency=made.amount.currency,
            provider_status=made.status,
        )
        ctx = _context(core, session, intent, invocation, now)
        result = await external.complete(external.plan.model_validate_json(intent.plan), made, ctx)
        summary: dict[str, Any] = {**result_summary(result), **_links(intent, resolver)}
        outcome = Outcome("allow", "succeeded", summary=summary, customer_id=ctx.customer_id or intent.customer_id)
        outcome.approval_id = intent.approval_id
        await chain.append(session, core.record(invocation, outcome, audit_id, now, kind="effect"))
        # The receipt handle names the outcome's record, the one that says the effect happened (as a local effect's).
        answer = with_receipt(with_effect_meta(success_result(result), intent, made.status), audit_id)
        resolved = await _store_answer(session, intent, answer, audit_id, now=now, ok=True, code=None, message=None)
        return answer, resolved

    async def late(session: AsyncSession, intent: Intent, invocation: Invocation) -> Intent:
        now = core.clock()
        audit_id = new_audit_id()
        logger.error("intent %s: the provider's object %s turned up after the intent failed", intent.id, made.id)
        intent = replace(
            intent,
            status=CONFLICT,
            provider_object_id=made.id,
            provider_status=made.status,
            amount_minor=made.amount.minor,
            currency=made.amount.currency,
        )
        summary = {**_links(intent, resolver), "failed_by": intent.outcome_audit_id}
        reason = "the provider made the object after the intent was resolved as failed; a person must reconcile it"
        outcome = Outcome(
            "error", "conflict", "effect_conflict", reason, summary=summary, customer_id=intent.customer_id
        )
        outcome.approval_id = intent.approval_id
        await chain.append(session, core.record(invocation, outcome, audit_id, now, kind="effect"))
        return intent

    return await _resolve(core, intent_id, resolver, call, act, late)


async def fail(
    core: CallPathCore,
    intent_id: str,
    *,
    code: str,
    message: str,
    provider_code: str | None,
    resolver: str,
    call: Invocation | None = None,
) -> types.CallToolResult:
    """The provider definitely did not act: release, record the failure with its reason; the final answer."""

    async def act(
        session: AsyncSession, intent: Intent, invocation: Invocation, audit_id: str
    ) -> tuple[types.CallToolResult, Intent]:
        now = core.clock()
        external = external_of(core, intent.tool)
        intent = replace(
            intent,
            status=FAILED,
            resolved_at=now,
            resolved_by=resolver,
            outcome_audit_id=audit_id,
            error_code=provider_code or code,
            error_message=message,
        )
        ctx = _context(core, session, intent, invocation, now)
        if external.release is not None:  # the tool's rows first, then the ledger: the decision's lock order
            await external.release(external.plan.model_validate_json(intent.plan), ctx)
        released = await budget.release(session, intent.audit_id, by_audit_id=audit_id, at=now)
        summary: dict[str, Any] = {"error": code, "released_budgets": released, **_links(intent, resolver)}
        if provider_code:
            summary["provider_code"] = provider_code
        outcome = Outcome("allow", "failed", code, message, summary=summary, customer_id=intent.customer_id)
        outcome.approval_id = intent.approval_id
        await chain.append(session, core.record(invocation, outcome, audit_id, now, kind="effect"))
        details: dict[str, Any] = {"provider": intent.provider_name, "intent_id": intent.id}
        if provider_code:
            details["provider_code"] = provider_code
        refusal = Refusal(status="failed", code=code, message=message, details=details, audit_id=audit_id)
        answer = with_effect_meta(refusal_result(refusal), intent, "failed")
        resolved = await _store_answer(session, intent, answer, audit_id, now=now, ok=False, code=code, message=message)
        return answer, resolved

    return await _resolve(core, intent_id, resolver, call, act)


def _context(core: CallPathCore, session: AsyncSession, intent: Intent, call: Invocation, now: Any) -> ToolContext:
    """The tool's view of the outcome's transaction: the requester, and the intent's record as the cause."""
    assert call.principal is not None
    return ToolContext(
        principal=call.principal,
        session=session,
        now=now,
        audit_id=intent.audit_id,
        tool_name=intent.tool,
        customer_id=intent.customer_id,
        approval_id=intent.approval_id,
        approvals=core.approvals,
    )


def _links(intent: Intent, resolver: str) -> dict[str, Any]:
    return {
        "intent_id": intent.id,
        "intent_audit_id": intent.audit_id,
        "provider": intent.provider_name,
        "provider_object_id": intent.provider_object_id,
        "provider_status": intent.provider_status,
        "resolved_by": resolver,
    }
