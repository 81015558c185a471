"""The facade the transports call: :class:`Enforcer` runs one tools/list or one tools/call through the steps of
the call path, from a verified principal to a recorded answer.

DESIGN.md section 3: visibility (scopes), strict argument validation (:mod:`server.callpath.admit`), the
idempotency key (:mod:`~server.callpath.keys`), the decision (:mod:`~server.callpath.decide`), then the effect and
its audit record in ONE transaction (:mod:`~server.callpath.act_local`) or the refusal or approval
(:mod:`~server.callpath.refuse`), and an answer the model can read (:mod:`~server.callpath.record`). Every
invocation writes an audit record, whatever its outcome; a failure anywhere in the decision path denies the action
(fail closed), and an action whose audit record cannot be written does not happen. Approved actions run through
:mod:`~server.callpath.approved`, ``mandate explain`` through :mod:`~server.callpath.explain`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import mcp_types as types
from opentelemetry import trace

from scopes.policy.results import Decision
from server import idempotency
from server.audit import chain
from server.auth.principal import Principal
from server.callpath import approved, explain, guard, keys
from server.callpath.act_external import act_external
from server.callpath.act_local import act_local
from server.callpath.admit import Admitted, Rejected, admit
from server.callpath.core import INTERNAL_ERROR, CallPathCore, new_audit_id
from server.callpath.decide import Explanation
from server.callpath.outage import failure_refusal
from server.callpath.record import CallInfo, Invocation, Outcome, refusal_result
from server.memo import PerObject

if TYPE_CHECKING:
    from sqlmodel.ext.asyncio.session import AsyncSession

    from server.approvals.desk import Execution
    from server.approvals.models import Approval

logger = logging.getLogger("server.callpath")


def _principal_attributes(principal: Principal) -> dict[str, str]:
    attributes = {"mandate.principal.client_id": principal.client_id, "mandate.principal.subject": principal.subject}
    if principal.tenant is not None:
        attributes["mandate.principal.tenant"] = principal.tenant
    return attributes


_principal_span_attributes: PerObject[Principal, dict[str, str]] = PerObject(_principal_attributes)
"""The span attributes naming a principal, worked out once per (frozen) principal; never changed in place."""


_ALREADY_CURRENT: AbstractContextManager[object] = nullcontext()


def _made_current(span: trace.Span) -> AbstractContextManager[object]:
    """``span`` as the current span until the block ends, then ended: what ``start_as_current_span`` does after
    starting it (its defaults: end on exit, record an escaping exception, set the error status), without its three
    layers of context managers around a proxy tracer's.

    A no-op tracer's span records nothing and carries the very span context of the current span (its parent), so
    making it current would change nothing anything reads (the audit record's trace id, a child span's parent, a log
    line's trace id all read the current span's context): it is left out. A span that records, or a sampler's
    dropped span with a span context of its own (a new trace id when there is no parent), is made current."""
    if span.is_recording() or span.get_span_context() is not trace.get_current_span().get_span_context():
        return trace.use_span(span, end_on_exit=True)
    return _ALREADY_CURRENT


def _span_attributes(principal: Principal, name: str) -> dict[str, str]:
    """A tools/call span's first attributes, in the order they were always set: the tool, then the principal."""
    return {"mcp.tool.name": name, **_principal_span_attributes(principal)}


class Enforcer(CallPathCore):
    """Applies Mandate's rules to tools/list and tools/call, and records every invocation."""

    # --- tools/list -------------------------------------------------------------------------------------------

    async def list_tools(self, principal: Principal, info: CallInfo) -> list[types.Tool]:
        call = Invocation(principal, info)
        visible = self.catalog.visible_to(principal.scopes)
        outcome = Outcome("allow", "listed", summary={"tools": len(visible)})
        refusal = await guard.suspension_refusal(self, principal)
        if refusal is not None:  # a suspended caller sees no tools; a failed check shows none either
            outcome, visible = Outcome("deny", "refused", refusal.code, refusal.message, summary={"tools": 0}), []
        try:
            await self.record_alone(call, outcome, kind="list")
        except Exception:  # nothing is shown unrecorded, and no database text reaches the client
            logger.exception("a listing could not be recorded; no tools are shown")
            return []
        return visible

    # --- tools/call -------------------------------------------------------------------------------------------

    async def call_tool(
        self, principal: Principal, name: str, arguments: Mapping[str, Any] | None, info: CallInfo
    ) -> types.CallToolResult:
        started = time.perf_counter()
        raw = dict(arguments or {})
        decided: list[Decision] = []
        token = guard.DECIDED.set(decided)
        span = self.tracer.start_span(f"tools/call {name}")
        with _made_current(span):
            if span.is_recording():
                span.set_attributes(_span_attributes(principal, name))
            try:
                result, decision = await self._call(principal, name, raw, info, started)
            except Exception as exc:  # fail closed, and never hand a driver's message (SQL, hosts) to the client
                logger.exception("a %s call could not be handled or recorded; it is refused", name)
                result, decision = refusal_result(failure_refusal(exc, INTERNAL_ERROR)), "error"
            finally:
                guard.DECIDED.reset(token)
            span.set_attribute("mandate.decision", decision)
            await guard.after_call(
                self, span, principal, name, result, decision, decided, time.perf_counter() - started
            )
            return result

    async def _call(
        self, principal: Principal, name: str, raw: dict[str, Any], info: CallInfo, started: float
    ) -> tuple[types.CallToolResult, str]:
        stopped = await guard.guard_refusal(self, principal, name)
        if stopped is not None:
            outcome = Outcome("deny", "refused", stopped.code, stopped.message, summary=dict(stopped.details or {}))
            invocation = Invocation(principal, info, name, raw, self.sensitive(name), started)
            audit_id = await self.record_alone(invocation, outcome)
            return refusal_result(stopped.model_copy(update={"audit_id": audit_id})), "deny"
        admitted = admit(self.catalog, principal, name, raw)
        if isinstance(admitted, Rejected):
            refusal = admitted.refusal
            outcome = Outcome("deny", admitted.ended, refusal.code, refusal.message)
            rejected = Invocation(principal, info, name, raw, admitted.sensitive, started)
            audit_id = await self.record_alone(rejected, outcome)
            return refusal_result(refusal.model_copy(update={"audit_id": audit_id})), "deny"
        key = admitted.idempotency_key
        if key != info.idempotency_key:  # the info is frozen: the one given serves as it is when it names the key
            info = replace(info, idempotency_key=key)
        call = Invocation(principal, info, name, raw, admitted.entry.spec.sensitive, started)
        if key is None:
            return await self.act(admitted, principal, call, None)
        return await keys.act_once(self, self.act, admitted, principal, call, key)

    async def act(
        self, admitted: Admitted, principal: Principal, call: Invocation, claimed: idempotency.Claimed | None
    ) -> tuple[types.CallToolResult, str]:
        """Step 5: decide and act, here (:mod:`server.callpath.act_local`) or, for an effect at an outside system
        whose provider is configured, through the intent protocol (:mod:`server.callpath.act_external`)."""
        external = admitted.entry.spec.external
        provider = self.providers.get(external.provider) if external is not None else None
        if provider is not None:
            return await act_external(self, admitted, principal, call, claimed, provider)
        return await act_local(self, admitted, principal, call, claimed)

    # --- running an approved action (server.approvals.desk.ActionRunner) --------------------------------------

    async def run_approved(self, session: AsyncSession, approval: Approval, now: datetime) -> Execution:
        """Run an approved action once, as its requester (:mod:`server.callpath.approved`)."""
        return await approved.run_approved(self, session, approval, now)

    # --- explain ----------------------------------------------------------------------------------------------

    async def explain(
        self, principal: Principal, name: str, arguments: Mapping[str, Any] | None, *, now: datetime | None = None
    ) -> Explanation:
        """The decision a call would get, without doing or recording anything (:mod:`server.callpath.explain`)."""
        return await explain.explain(self, principal, name, arguments, now=now)

    # --- refusals at the transport ----------------------------------------------------------------------------

    async def record_refusal(
        self,
        principal: Principal | None,
        info: CallInfo,
        tool: str | None,
        code: str,
        reason: str,
        kind: str,
        summary: dict[str, Any] | None = None,
    ) -> str | None:
        """Record a request refused before it reached a tool (HTTP 401/403 at the transport); its audit id, or None
        when the record could not be written (the request stays refused; the failure is logged). ``summary``: what
        an aggregated record adds (how many refusals it stands for)."""
        outcome = Outcome("deny", "refused", code, reason, summary=dict(summary or {}))
        try:
            return await self.record_alone(Invocation(principal, info, tool), outcome, kind=kind)
        except Exception:
            logger.exception("a refused request could not be recorded")
            return None

    async def record_guard(
        self, session: AsyncSession, principal: Principal, reason: str, summary: dict[str, Any]
    ) -> str:
        """Append, in ``session``, the record of a guard acting on its own (a circuit breaker tripping)."""
        audit_id = new_audit_id()
        call = Invocation(principal, CallInfo(transport="guard"))
        outcome = Outcome("deny", "breaker_tripped", "breaker_tripped", reason, summary=summary)
        await chain.append(session, self.record(call, outcome, audit_id, self.clock(), "guard"))
        return audit_id
