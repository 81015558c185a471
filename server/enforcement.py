"""The path of one tools/call and one tools/list, from a verified principal to a recorded answer.

DESIGN.md section 3: visibility (scopes), strict argument validation, decision, then the effect and its audit record
in ONE transaction, and an answer the model can read. Every invocation writes an audit record, whatever its
outcome; a failure anywhere in the decision path denies the action (fail closed), and an action whose audit record
cannot be written does not happen.

The decision (docs/policy.md) runs inside the call's transaction: the tool's facts loader reads (and locks) the
stored state, the ledger totals the policy needs are read under lock, :func:`scopes.policy.decide` judges, and for
``allow`` the ledger reservation, the effect and the audit record commit together. A deny or an approval commits
the audit record only. :meth:`Enforcer.explain` runs the same steps and rolls everything back.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import mcp_types as types
from opentelemetry import trace

from scopes.identity import identity_key
from scopes.policy import Decision, load_policy
from server import idempotency, ledger
from server.admission import Admitted, Rejected, admit
from server.approvals.store import requester_principal, stored_arguments
from server.audit import chain
from server.audit.models import AuditRecord
from server.audit.redaction import arguments_digest
from server.auth.principal import Principal
from server.catalog import ToolCatalog
from server.config import IdempotencySettings
from server.invocation import CallInfo as CallInfo  # re-exported: transports build one per request
from server.invocation import (
    Invocation,
    Outcome,
    build_record,
    decided_outcome,
    result_summary,
    success_result,
)
from server.invocation import refusal_result as refusal_result
from server.outcomes import Refusal
from server.pending_approvals import PendingAction
from server.policy_gate import (
    Explanation,
    Gate,
    concealed,
    decide_in,
    denial,
    pending_result,
    without_waiting,
)
from server.policy_runtime import PolicySource, StaticPolicy
from server.storage.database import Database
from server.toolkit import ToolContext, ToolError

if TYPE_CHECKING:
    from sqlmodel.ext.asyncio.session import AsyncSession

    from server.approvals.desk import ApprovalDesk, Execution
    from server.approvals.models import Approval

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("mandate")


IDEMPOTENCY_META = "io.mandate/idempotency"
"""``_meta`` key of a replayed answer: ``{"replayed": true, "key", "original_audit_id", "audit_id"}``."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_audit_id() -> str:
    return f"aud_{uuid.uuid4().hex}"


class _RollBack(Exception):
    def __init__(self, gate: Gate) -> None:
        super().__init__("explain rolls back")
        self.gate = gate


class Enforcer:
    """Applies Mandate's rules to tools/list and tools/call, and records every invocation."""

    def __init__(
        self,
        db: Database,
        catalog: ToolCatalog,
        *,
        instance: str,
        clock: Callable[[], datetime] = utcnow,
        policies: PolicySource | None = None,
        keys: IdempotencySettings | None = None,
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.instance = instance
        self.clock = clock
        self.policies: PolicySource = policies if policies is not None else StaticPolicy(load_policy())
        self.keys = keys if keys is not None else IdempotencySettings()
        self.approvals: ApprovalDesk | None = None
        """Where actions that need a human go (:mod:`server.approvals`); set by :func:`server.app.open_mandate`.
        Without it a decision of ``approval`` is refused (fail closed), never allowed."""

    # --- tools/list -------------------------------------------------------------------------------------------

    async def list_tools(self, principal: Principal, info: CallInfo) -> list[types.Tool]:
        call = Invocation(principal, info)
        visible = self.catalog.visible_to(principal.scopes)
        outcome = Outcome("allow", "listed", summary={"tools": len(visible)})
        try:
            await self._record_alone(call, outcome, kind="list")
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
        with tracer.start_as_current_span(f"tools/call {name}") as span:
            span.set_attribute("mcp.tool.name", name)
            span.set_attribute("mandate.principal.client_id", principal.client_id)
            try:
                result, decision = await self._call(principal, name, raw, info, started)
            except Exception:  # fail closed, and never hand a driver's message (SQL, hosts) to the client
                logger.exception("a %s call could not be handled or recorded; it is refused", name)
                result, decision = refusal_result(_INTERNAL_ERROR), "error"
            span.set_attribute("mandate.decision", decision)
            return result

    async def _call(
        self, principal: Principal, name: str, raw: dict[str, Any], info: CallInfo, started: float
    ) -> tuple[types.CallToolResult, str]:
        admitted = admit(self.catalog, principal, name, raw)
        if isinstance(admitted, Rejected):
            refusal = admitted.refusal
            outcome = Outcome("deny", admitted.ended, refusal.code, refusal.message)
            rejected = Invocation(principal, info, name, raw, admitted.sensitive, started)
            audit_id = await self._record_alone(rejected, outcome)
            return refusal_result(refusal.model_copy(update={"audit_id": audit_id})), "deny"
        key = admitted.idempotency_key
        info = replace(info, idempotency_key=key)
        call = Invocation(principal, info, name, raw, admitted.entry.spec.sensitive, started)
        if key is None:
            return await self._act(admitted, principal, call, None)
        return await self._act_once(admitted, principal, call, key)

    # --- idempotency keys (docs/approvals.md, "Idempotency keys") ---------------------------------------------

    async def _act_once(
        self, admitted: Admitted, principal: Principal, call: Invocation, key: str
    ) -> tuple[types.CallToolResult, str]:
        """A call with an idempotency key: claim the key, then run it once, or answer as the first call did."""
        spec = admitted.entry.spec
        now = self.clock()
        try:
            claimed = await idempotency.claim(
                self.db,
                principal_key=_key_owner(principal),
                tool=spec.name,
                key=key,
                arguments_digest=arguments_digest(call.raw),
                now=now,
                ttl=timedelta(seconds=self.keys.ttl_seconds),
                lease=timedelta(seconds=self.keys.lease_seconds),
            )
        except Exception:
            logger.exception("the idempotency key of a %s call could not be claimed; the call is refused", spec.name)
            return await self._internal_error(call, new_audit_id())
        if isinstance(claimed, idempotency.Claimed):
            return await self._act(admitted, principal, call, claimed)
        if isinstance(claimed, idempotency.Replay):
            return await self._replay(claimed, principal, call, key), "allow"
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
        audit_id = await self._record_alone(call, outcome)
        return refusal_result(refusal.model_copy(update={"audit_id": audit_id})), "deny"

    async def _replay(
        self, replay: idempotency.Replay, principal: Principal, call: Invocation, key: str
    ) -> types.CallToolResult:
        """The stored answer again (a pending approval brought up to date), recorded as a replay; no effect."""
        result = replay.result
        if self.approvals is not None:
            async with self.db.session() as session:
                result = await self.approvals.refresh(session, principal, result, self.clock())
        summary = {"replay_of": replay.audit_id}
        outcome = Outcome(
            "allow", "replayed", "idempotent_replay", "the stored answer of an earlier call", summary=summary
        )
        audit_id = await self._record_alone(call, outcome)
        meta = dict(result.meta or {})
        meta[IDEMPOTENCY_META] = {
            "replayed": True,
            "key": key,
            "original_audit_id": replay.audit_id,
            "audit_id": audit_id,
        }
        return result.model_copy(update={"meta": meta})

    async def _gate(self, admitted: Admitted, ctx: ToolContext, *, lock: bool) -> Gate:
        """Step 4, inside the call's transaction (:func:`server.policy_gate.decide_in`)."""
        spec, policy = admitted.entry.spec, self.policies.current()
        return await decide_in(spec, admitted.args, admitted.policy_args, ctx, policy, lock=lock)

    async def _act(
        self, admitted: Admitted, principal: Principal, call: Invocation, claimed: idempotency.Claimed | None
    ) -> tuple[types.CallToolResult, str]:
        spec = admitted.entry.spec
        audit_id = new_audit_id()
        now = self.clock()
        decided: list[Decision] = []
        contexts: list[ToolContext] = []
        stored: list[bool] = []  # the answer was stored with the key in the call's transaction

        def record(outcome: Outcome) -> AuditRecord:
            return self._record(call, outcome, audit_id, now)

        async def work(session: Any) -> tuple[types.CallToolResult, str]:
            decided.clear()
            stored.clear()
            ctx = self._context(principal, session, now, audit_id, spec.name)
            contexts[:] = [ctx]
            gate = await self._gate(admitted, ctx, lock=True)
            decision = gate.decision
            decided.append(decision)
            if decision.effect != "allow":
                answer, kind = await self._refuse(session, gate, ctx, call, record)
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
            answer, kind = await self.db.run_in_transaction(work)
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
            refusal = Refusal(
                status="failed", code=exc.code, message=exc.message, details=exc.details, audit_id=audit_id
            )
            answer = refusal_result(refusal)
            try:
                await self._record_alone(call, outcome, audit_id=audit_id, claimed=(claimed, answer))
            except Exception:
                logger.exception("the refusal of a %s call could not be recorded; the call is refused", spec.name)
                await self._release(claimed)
                return await self._internal_error(call, audit_id)
            return answer, "allow"
        except Exception:
            logger.exception("tool %s failed; its transaction was rolled back", spec.name)
            await self._release(claimed)
            return await self._internal_error(call, audit_id)
        if claimed is not None and not stored and kind in ("deny", "error"):  # nothing happened: a retry runs anew
            await self._release(claimed)
        return answer, kind

    async def _release(self, claimed: idempotency.Claimed | None) -> None:
        if claimed is None:
            return
        try:
            await idempotency.release(self.db, claimed)
        except Exception:  # the claim's lease runs out, and a retry takes it over then
            logger.exception("an idempotency claim could not be released")

    async def _internal_error(self, call: Invocation, audit_id: str) -> tuple[types.CallToolResult, str]:
        """Fail closed: the action did not happen; say so, and record it if the database lets us."""
        message = _INTERNAL_ERROR.message
        outcome = Outcome("error", "failed", "internal_error", message)
        try:
            await self._record_alone(call, outcome, audit_id=audit_id)
        except Exception:
            logger.exception("the failure of %s could not be recorded either", call.tool)
        return refusal_result(_INTERNAL_ERROR.model_copy(update={"audit_id": audit_id})), "error"

    def _context(self, principal: Principal, session: Any, now: datetime, audit_id: str, tool: str) -> ToolContext:
        return ToolContext(
            principal=principal, session=session, now=now, audit_id=audit_id, tool_name=tool, approvals=self.approvals
        )

    async def _refuse(
        self,
        session: Any,
        gate: Gate,
        ctx: ToolContext,
        call: Invocation,
        record: Callable[[Outcome], AuditRecord],
    ) -> tuple[types.CallToolResult, str]:
        """A deny or an approval: record it in the call's transaction (which changes nothing else) and answer."""
        decision, audit_id = gate.decision, ctx.audit_id
        if decision.conceal:
            await chain.append(session, record(decided_outcome("deny", "refused", decision, {}, ctx.customer_id)))
            return refusal_result(concealed(gate, audit_id)), "deny"
        entry = self.catalog.get(ctx.tool_name)
        if decision.effect == "approval" and entry is not None and entry.spec.read_only:
            decision = without_waiting(decision)
        if decision.effect == "approval" and self.approvals is None:
            decision = replace(
                decision,
                effect="deny",
                reason_code="approvals_unavailable",
                reason=f"{decision.reason} This server takes no approvals, so the call is refused.",
            )
        if decision.effect == "approval" and self.approvals is not None:
            outcome = decided_outcome("approval", "pending_approval", decision, {}, ctx.customer_id)
            pending = await self.approvals.request(
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

    # --- running an approved action (server.approvals.desk.ActionRunner) --------------------------------------

    async def run_approved(self, session: AsyncSession, approval: Approval, now: datetime) -> Execution:
        """Run an approved action once, as its requester, inside the approver's transaction (docs/approvals.md).

        The stored arguments (checked against the digest the approval was bound to) are admitted again, the policy
        decides again with the rules that required approval waived for this action only (every other condition,
        ledger totals included, is checked against the current state), then the ledger, the effect and the audit
        record (with the approval id) are written in a savepoint. A refusal now rolls the savepoint back and is
        recorded as a failed run; only an internal failure raises (and the approver's whole transaction with it).
        """
        from server.approvals.desk import Execution

        audit_id = new_audit_id()
        principal = requester_principal(approval)
        info = CallInfo(transport="approval", request_id=approval.id, idempotency_key=approval.idempotency_key)
        tool = approval.tool
        call = Invocation(principal, info, tool, {}, self.sensitive(tool))
        try:
            arguments = stored_arguments(approval)
        except ValueError as exc:
            refusal = Refusal(status="failed", code="approval_arguments_changed", message=f"{exc}; nothing was done.")
            return await self._failed_run(session, approval, call, refusal, audit_id, now)
        call = replace(call, raw=arguments)
        admitted = admit(self.catalog, principal, tool, dict(arguments))
        if isinstance(admitted, Rejected):
            return await self._failed_run(session, approval, call, admitted.refusal, audit_id, now)
        spec = admitted.entry.spec
        waived = frozenset(approval.waived_rules.split())
        savepoint = await session.begin_nested()
        try:
            ctx = self._context(principal, session, now, audit_id, tool)
            policy = self.policies.current()
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
                return await self._failed_run(session, approval, call, refusal, audit_id, now, decision)
            await ledger.reserve(session, decision.spends, at=now, audit_id=audit_id, tool=tool)
            result = await spec.handler(admitted.args, ctx)
            outcome = decided_outcome(
                "allow", "succeeded", decision, result_summary(result), ctx.customer_id or approval.customer_id
            )
            outcome.approval_id = approval.id
            await chain.append(session, self._record(call, outcome, audit_id, now))
            await savepoint.commit()
            return Execution(succeeded=True, result=success_result(result), audit_id=audit_id)
        except ToolError as exc:
            if savepoint.is_active:
                await savepoint.rollback()
            refusal = Refusal(status="failed", code=exc.code, message=exc.message, details=exc.details)
            return await self._failed_run(session, approval, call, refusal, audit_id, now)

    async def _failed_run(
        self,
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
        await chain.append(session, self._record(call, outcome, audit_id, now))
        answer = refusal_result(refusal.model_copy(update={"message": message, "audit_id": audit_id}))
        return Execution(succeeded=False, result=answer, audit_id=audit_id, code=refusal.code, message=message)

    def sensitive(self, tool: str) -> frozenset[str]:
        """The argument fields of ``tool`` that records and lists show redacted."""
        entry = self.catalog.get(tool)
        return entry.spec.sensitive if entry is not None else frozenset()

    # --- explain ----------------------------------------------------------------------------------------------

    async def explain(
        self, principal: Principal, name: str, arguments: Mapping[str, Any] | None, *, now: datetime | None = None
    ) -> Explanation:
        """The decision a call would get, without doing or recording anything (its transaction is rolled back)."""
        admitted = admit(self.catalog, principal, name, dict(arguments or {}))
        if isinstance(admitted, Rejected):
            return Explanation(refusal=admitted.refusal)
        spec = admitted.entry.spec
        at = now or self.clock()

        async def work(session: Any) -> None:
            ctx = ToolContext(principal=principal, session=session, now=at, audit_id="explain", tool_name=spec.name)
            raise _RollBack(await self._gate(admitted, ctx, lock=False))

        try:
            await self.db.run_in_transaction(work)
        except _RollBack as done:
            return Explanation(gate=done.gate)
        except ToolError as exc:
            return Explanation(
                refusal=Refusal(status="failed", code=exc.code, message=exc.message, details=exc.details)
            )
        raise AssertionError("unreachable: explain always rolls back")  # pragma: no cover

    # --- records ----------------------------------------------------------------------------------------------

    def _record(
        self, call: Invocation, outcome: Outcome, audit_id: str, at: datetime, kind: str = "call"
    ) -> AuditRecord:
        return build_record(self.instance, call, outcome, audit_id, at, kind=kind)

    async def _record_alone(
        self,
        call: Invocation,
        outcome: Outcome,
        *,
        audit_id: str | None = None,
        kind: str = "call",
        claimed: tuple[idempotency.Claimed | None, types.CallToolResult] | None = None,
    ) -> str:
        """Write one record in a transaction of its own (for invocations that change nothing else).

        ``claimed``: an idempotency claim to complete with this answer in the same transaction (a tool's refusal).
        """
        record_id = audit_id or new_audit_id()
        record = self._record(call, outcome, record_id, self.clock(), kind)

        async def work(session: Any) -> None:
            await chain.append(session, record)
            if claimed is not None and claimed[0] is not None:
                await idempotency.complete(session, claimed[0], claimed[1], record_id)

        await self.db.run_in_transaction(work)
        return record_id

    async def record_refusal(
        self, principal: Principal | None, info: CallInfo, tool: str | None, code: str, reason: str, kind: str
    ) -> str | None:
        """Record a request refused before it reached a tool (HTTP 401/403 at the transport); its audit id, or None
        when the record could not be written (the request stays refused; the failure is logged)."""
        outcome = Outcome("deny", "refused", code, reason)
        try:
            return await self._record_alone(Invocation(principal, info, tool), outcome, kind=kind)
        except Exception:
            logger.exception("a refused request could not be recorded")
            return None


_INTERNAL_ERROR = Refusal(
    status="failed",
    code="internal_error",
    message="The action could not be completed because of an internal error; nothing was changed.",
)


def _key_owner(principal: Principal) -> str:
    """Whose idempotency keys these are: the principal, within its tenant (a stored answer never crosses tenants)."""
    if principal.tenant is None:
        return principal.key
    return identity_key(principal.issuer, principal.client_id, principal.subject, principal.tenant)
