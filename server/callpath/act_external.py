"""Step 5 for ``allow`` when the effect happens at an outside system: the intent protocol (docs/effects.md).

(a) One transaction: the decision, the ledger reservation, the tool's ``prepare`` (checks, and holds on local
    state), an intent (status ``started``, the provider key derived from the audit id, a lease) and its audit record
    (outcome ``started``); with an idempotency key, the in-doubt answer is stored with it, so a retry can never
    start a second intent.
(b) The provider call (:class:`server.toolkit.External` ``call``), outside any transaction, carrying the key and
    metadata naming the intent, bounded by the lease.
(c) One transaction (:mod:`server.effects.outcome`): the outcome, linked to the intent.

A definite refusal releases the reservation and answers a tool error naming the provider's reason. Anything else
(a timeout, the provider unreachable, the database unreachable for (c), the process dying) leaves the intent
``started``: the agent is told the outcome is in doubt and when to retry, and the reconciler
(:mod:`server.effects.reconciler`) resolves it once the lease has passed.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import mcp_types as types
from pydantic import BaseModel

from scopes.policy import Decision
from server import idempotency
from server.audit import chain
from server.auth.principal import Principal
from server.callpath import guard
from server.callpath.act_local import Record, decide_and_act
from server.callpath.admit import Admitted
from server.callpath.core import CallPathCore, key_owner
from server.callpath.record import Invocation, decided_outcome
from server.effects import faults, intents, outcome
from server.effects.errors import describe, refusal_of
from server.effects.models import Intent
from server.toolkit import External, ToolContext

logger = logging.getLogger("server.callpath")


async def act_external(
    core: CallPathCore,
    admitted: Admitted,
    principal: Principal,
    call: Invocation,
    claimed: idempotency.Claimed | None,
    provider: Any,
) -> tuple[types.CallToolResult, str]:
    """Run (a), (b) and (c) for one call; the answer and the kind of decision."""
    spec = admitted.entry.spec
    external = spec.external
    assert external is not None
    started: list[Intent] = []

    async def effect(session: Any, ctx: ToolContext, decision: Decision, record: Record) -> types.CallToolResult:
        started.clear()
        guard.note_decision(decision)
        intent, answer = await start(core, session, ctx, decision, record, admitted, call, claimed, provider)
        started.append(intent)
        return answer

    answer, kind, acted = await decide_and_act(core, admitted, principal, call, claimed, effect)
    if not acted or not started:
        return answer, kind
    return await carry_out(core, started[-1], external, provider, call), "allow"


async def start(
    core: CallPathCore,
    session: Any,
    ctx: ToolContext,
    decision: Decision,
    record: Record,
    admitted: Admitted,
    call: Invocation,
    claimed: idempotency.Claimed | None,
    provider: Any,
) -> tuple[Intent, types.CallToolResult]:
    """(a), after the decision and the reservation, in their transaction: prepare, the intent, its record."""
    spec = admitted.entry.spec
    external = spec.external
    assert external is not None
    plan: BaseModel = await external.prepare(admitted.args, ctx)
    intent = intents.new_intent(
        intent_id=intents.new_intent_id(),
        audit_id=ctx.audit_id,
        tool=spec.name,
        provider=external.provider,
        provider_name=str(getattr(provider, "name", external.provider)),
        arguments=call.raw,
        plan=plan.model_dump_json(),
        principal=ctx.principal,
        principal_key=key_owner(ctx.principal),
        customer_id=ctx.customer_id,
        approval_id=ctx.approval_id,
        call_key=claimed.key if claimed is not None else None,
        call_key_id=claimed.id if claimed is not None else None,
        transport=call.info.transport,
        request_id=call.info.request_id,
        now=ctx.now,
        lease_until=core.clock() + _lease(core),
    )
    await intents.insert_started(session, intent)
    summary = {"intent_id": intent.id, "provider": intent.provider_name, "provider_key": intent.provider_key}
    started = decided_outcome("allow", "started", decision, summary, ctx.customer_id)
    started.approval_id = ctx.approval_id
    await chain.append(session, record(started))
    answer = intents.in_doubt_answer(intent, ctx.now, core.effects.reconcile_interval_seconds)
    if claimed is not None:  # a retry with the key meets this intent, never a second one
        await idempotency.complete(session, claimed, answer, ctx.audit_id)
    return intent, answer


async def carry_out(
    core: CallPathCore, intent: Intent, external: External, provider: Any, call: Invocation | None
) -> types.CallToolResult:
    """(b) and (c) for an intent whose transaction (a) has committed; the answer the caller gets."""
    faults.reach("after_intent_commit")
    plan = external.plan.model_validate_json(intent.plan)
    effect_call = intents.effect_call(intent)
    interval = core.effects.reconcile_interval_seconds
    left = intents.call_seconds_left(intent, core.clock(), core.effects.lease_seconds)
    if left <= 0:  # the lease is nearly over before anything was sent: definitely not made, so say so now
        return await _resolve_or_doubt(core, intent, _not_sent(core, intent, call))
    try:
        with anyio.fail_after(left):  # the call ends before its lease does, so a reconciler never races it
            with core.tracer.start_as_current_span(f"provider {intent.provider_name} {intent.tool}") as span:
                span.set_attribute("mandate.effect.intent_id", intent.id)  # a child of the tools/call span
                span.set_attribute("mandate.effect.provider", intent.provider_name)
                made = await external.call(plan, provider, effect_call)
    except Exception as exc:  # noqa: BLE001 - a refusal is told apart below; anything else is in doubt
        refused = refusal_of(exc)
        if refused is None:
            logger.warning("intent %s is in doubt: %s", intent.id, describe(exc))
            await _note(core, intent, describe(exc))
            return intents.in_doubt_answer(intent, core.clock(), interval)
        code, message = refused
        text = (
            f"The {intent.provider_name} provider refused this, so nothing was done there and nothing was spent: "
            f"{message} (provider code {code})."
        )
        return await _resolve_or_doubt(
            core,
            intent,
            outcome.fail(
                core,
                intent.id,
                code="provider_refused",
                message=text,
                provider_code=code,
                resolver=outcome.RESOLVED_BY_CALL,
                call=call,
            ),
        )
    faults.reach("after_provider_call")
    if made.status in ("failed", "canceled"):
        text = (
            f"The {intent.provider_name} provider did not carry this out (its {made.id} ended {made.status}), so "
            "nothing was spent."
        )
        return await _resolve_or_doubt(
            core,
            intent,
            outcome.fail(
                core,
                intent.id,
                code=f"provider_{made.status}",
                message=text,
                provider_code=made.status,
                resolver=outcome.RESOLVED_BY_CALL,
                call=call,
            ),
        )
    return await _resolve_or_doubt(
        core, intent, outcome.succeed(core, intent.id, made, resolver=outcome.RESOLVED_BY_CALL, call=call)
    )


async def _not_sent(core: CallPathCore, intent: Intent, call: Invocation | None) -> types.CallToolResult:
    logger.warning("intent %s was not sent: its lease was nearly over when its transaction committed", intent.id)
    text = (
        f"This was not sent to the {intent.provider_name} provider: the server was too busy to send it within its "
        "lease, so nothing was done there and nothing was spent. A new request (with a new idempotency_key, if one was "
        "used) may be made."
    )
    return await outcome.fail(
        core,
        intent.id,
        code="effect_not_made",
        message=text,
        provider_code=None,
        resolver=outcome.RESOLVED_BY_CALL,
        call=call,
    )


async def _resolve_or_doubt(core: CallPathCore, intent: Intent, resolving: Any) -> types.CallToolResult:
    try:
        answer: types.CallToolResult = await resolving
        return answer
    except Exception:  # the database, most likely: the reconciler writes (c) later
        logger.exception("the outcome of intent %s could not be recorded; it stays in doubt", intent.id)
        return intents.in_doubt_answer(intent, core.clock(), core.effects.reconcile_interval_seconds)


async def _note(core: CallPathCore, intent: Intent, text: str) -> None:
    try:
        await intents.note_error(core.db, intent.id, text)
    except Exception:
        logger.exception("could not note why intent %s is in doubt", intent.id)


def _lease(core: CallPathCore) -> Any:
    from datetime import timedelta

    return timedelta(seconds=core.effects.lease_seconds)
