"""Idempotency keys on the call path (docs/approvals.md, "Idempotency keys"; :mod:`server.idempotency` keeps them).

A call with a key claims it before the decision: the first claim runs the call and stores its answer with the
effect; a retry with the same arguments gets the stored answer again (recorded as a replay, no effect; an effect
still in doubt answers so, with when to retry, then its final answer once resolved: docs/effects.md); the same key
with other arguments is refused; a key whose call is still running gets a retryable refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import mcp_types as types

from server import idempotency
from server.audit.redaction import arguments_digest
from server.auth.principal import Principal
from server.callpath.admit import Admitted
from server.callpath.answers import Refusal
from server.callpath.core import CallPathCore, key_owner, new_audit_id
from server.callpath.record import Invocation, Outcome, refusal_result
from server.effects import intents

logger = logging.getLogger("server.callpath")

IDEMPOTENCY_META = "io.mandate/idempotency"
"""``_meta`` key of a replayed answer: ``{"replayed": true, "key", "original_audit_id", "audit_id"}``."""

Act = Callable[
    [Admitted, Principal, Invocation, idempotency.Claimed | None], Awaitable[tuple[types.CallToolResult, str]]
]


async def act_once(
    core: CallPathCore, act: Act, admitted: Admitted, principal: Principal, call: Invocation, key: str
) -> tuple[types.CallToolResult, str]:
    """A call with an idempotency key: claim the key, then run it once (``act``), or answer as the first call did."""
    spec = admitted.entry.spec
    now = core.clock()
    try:
        claimed = await idempotency.claim(
            core.db,
            principal_key=key_owner(principal),
            tool=spec.name,
            key=key,
            arguments_digest=arguments_digest(call.raw),
            now=now,
            ttl=timedelta(seconds=core.keys.ttl_seconds),
            lease=timedelta(seconds=core.keys.lease_seconds),
            owner=core.instance,
            owner_silence=timedelta(seconds=core.keys.owner_silence_seconds),
        )
    except Exception:
        logger.exception("the idempotency key of a %s call could not be claimed; the call is refused", spec.name)
        return await core.internal_error(call, new_audit_id())
    if isinstance(claimed, idempotency.Claimed):
        return await act(admitted, principal, call, claimed)
    if isinstance(claimed, idempotency.Replay):
        return await replay(core, claimed, principal, call, key), "allow"
    if isinstance(claimed, idempotency.Mismatch):
        refusal = Refusal(
            status="denied",
            code="idempotency_key_reused",
            message="This idempotency key was already used with different arguments, so nothing was done. "
            "Use a new key for a different request.",
        )
    else:
        refusal = Refusal(
            status="denied",
            code="idempotency_in_progress",
            message="A request with this idempotency key is still running; nothing more was done. Retry in "
            f"{claimed.retry_after_seconds} s to get its answer.",
            details={"retryable": True, "retry_after_seconds": claimed.retry_after_seconds},
        )
    outcome = Outcome("deny", "refused", refusal.code, refusal.message)
    audit_id = await core.record_alone(call, outcome)
    return refusal_result(refusal.model_copy(update={"audit_id": audit_id})), "deny"


async def replay(
    core: CallPathCore, stored: idempotency.Replay, principal: Principal, call: Invocation, key: str
) -> types.CallToolResult:
    """The stored answer again (a pending approval brought up to date), recorded as a replay; no effect."""
    result = stored.result
    if core.approvals is not None:
        async with core.db.session() as session:
            result = await core.approvals.refresh(session, principal, result, core.clock())
    result = await intents.refresh(core.db, result, core.clock(), core.effects.reconcile_interval_seconds)
    summary = {"replay_of": stored.audit_id}
    outcome = Outcome("allow", "replayed", "idempotent_replay", "the stored answer of an earlier call", summary=summary)
    audit_id = await core.record_alone(call, outcome)
    meta = dict(result.meta or {})
    meta[IDEMPOTENCY_META] = {
        "replayed": True,
        "key": key,
        "original_audit_id": stored.audit_id,
        "audit_id": audit_id,
    }
    return result.model_copy(update={"meta": meta})
