"""The guard step, before admission: is the caller suspended, and does this call fit its rate limits
(:mod:`server.guards`; docs/operations.md)? And after the answer: metrics, span attributes, circuit breakers.

A suspended caller's call is refused with ``suspended`` and recorded; a check that cannot be answered refuses the
call (``suspension_check_failed`` / ``rate_limit_check_failed``: fail closed). A full rate limit is a refusal
``rate_limited`` whose details carry ``retry_after_seconds``. Principal-wide limits are taken here unless the HTTP
edge already took them for this request (where a full one is HTTP 429).
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import mcp_types as types

from scopes.policy.results import Decision
from server.auth.principal import Principal
from server.callpath.answers import Refusal
from server.guards.rate_limits import edge_checked

if TYPE_CHECKING:
    from server.callpath.core import CallPathCore

logger = logging.getLogger("server.callpath")

DECIDED: ContextVar[list[Decision] | None] = ContextVar("mandate_decided", default=None)
"""The policy decision of the current tools/call, for what looks at a call once it is answered (breakers, spans)."""


def note_decision(decision: Decision) -> None:
    observed = DECIDED.get()
    if observed is not None:
        observed[:] = [decision]


async def suspension_refusal(core: CallPathCore, principal: Principal) -> Refusal | None:
    """Why ``principal`` may not act now (suspended, or the check failed: fail closed); None when it may."""
    if core.guards is None:
        return None
    try:
        suspension = await core.guards.suspended(principal)
    except Exception:
        logger.exception("the suspension check failed; the caller is refused")
        return Refusal(
            status="denied",
            code="suspension_check_failed",
            message="Whether this caller is suspended could not be checked, so nothing was done. Retry shortly.",
            details={"retryable": True},
        )
    if suspension is None:
        return None
    if core.metrics is not None:
        core.metrics.suspended_calls.inc()
    return Refusal(
        status="denied",
        code="suspended",
        message="This caller is suspended by the security team, so nothing was done and no tools are available. "
        "A person must resume it (mandate resume) before it can act again.",
        details={"suspension_id": suspension.id, "since": suspension.suspended_at.isoformat()},
    )


async def guard_refusal(core: CallPathCore, principal: Principal, name: str) -> Refusal | None:
    """Suspension, then the rate limits this call counts against; a refusal, or None to go on."""
    refusal = await suspension_refusal(core, principal)
    if refusal is not None or core.guards is None:
        return refusal
    try:
        tool = name if core.catalog.get(name) is not None else None
        rules, principal_wide = core.guards.rules, not edge_checked.get()
        if not core.guards.rates.limits(rules, tool, principal_wide=principal_wide):  # none to take
            return None
        limited = await core.guards.rates.take(rules, principal, tool, principal_wide=principal_wide)
    except Exception:
        logger.exception("the rate limits could not be checked; the call is refused")
        return Refusal(
            status="denied",
            code="rate_limit_check_failed",
            message="The rate limits could not be checked, so nothing was done. Retry shortly.",
            details={"retryable": True},
        )
    if limited is None:
        return None
    return Refusal(
        status="denied",
        code="rate_limited",
        message=limited.message,
        details={
            "retryable": True,
            "retry_after_seconds": limited.retry_after_seconds,
            "limit": limited.limit.id,
            "scope": "principal" if limited.limit.principal_wide else "tool",
        },
    )


async def after_call(
    core: CallPathCore,
    span: Any,
    principal: Principal,
    name: str,
    result: types.CallToolResult,
    kind: str,
    decided: list[Decision],
    seconds: float,
) -> None:
    """Metrics and span attributes of an answered call, then let the circuit breakers count it."""
    reason = reason_of(result)
    span.set_attribute("mandate.reason", reason)
    decision = decided[-1] if decided else None
    if decision is not None and decision.rule_id:
        span.set_attribute("mandate.rule", decision.rule_id)
    if core.metrics is not None:
        known = name if core.catalog.get(name) is not None else "(unknown)"  # label values stay a bounded set
        core.metrics.observe_call(known, kind, reason, seconds)
    if core.guards is None or reason in ("suspended", "rate_limited"):
        return
    try:
        rules = core.guards.rules
        if rules.breakers:  # none configured: nothing to count (``observe`` would find no breaker relevant)
            await core.guards.breakers.observe(rules, principal, kind, decision)
    except Exception:  # the call is answered already; the next one is checked again
        logger.exception("the circuit breakers could not count a call of %s", principal.client_id)


def reason_of(result: types.CallToolResult) -> str:
    """The reason code of an answer, for metrics and spans: the refusal's code, ``approval_required``, or ``ok``."""
    content = result.structured_content if isinstance(result.structured_content, dict) else {}
    if result.is_error:
        code = content.get("code")
        return code[:64] if isinstance(code, str) else "error"
    return "approval_required" if content.get("status") == "pending_approval" else "ok"
