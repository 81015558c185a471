"""What every step of the call path shares: the database, the catalog, the policy, the clock, and how a step
records an invocation that changes nothing else.

DESIGN.md section 3 (every invocation writes an audit record, whatever its outcome; a failure anywhere in the
decision path denies the action) and section 6 (what a record holds). The steps (:mod:`server.callpath.admit`,
:mod:`~server.callpath.keys`, :mod:`~server.callpath.decide`, :mod:`~server.callpath.act_local`,
:mod:`~server.callpath.approved`, :mod:`~server.callpath.explain`) are functions of a :class:`CallPathCore`;
:class:`server.callpath.enforcer.Enforcer` is the facade the transports call.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import mcp_types as types
from opentelemetry import trace

from scopes.identity import identity_key
from scopes.policy import load_policy
from server import idempotency
from server.audit import chain
from server.audit.chain import NewRecord
from server.auth.principal import Principal
from server.callpath.admit import Admitted
from server.callpath.answers import Refusal
from server.callpath.decide import Gate, decide_in
from server.callpath.outage import COMMIT_IN_DOUBT, failure_refusal
from server.callpath.record import Invocation, Outcome, build_record, refusal_result
from server.catalog import ToolCatalog
from server.config import EffectsSettings, IdempotencySettings
from server.policy_runtime import PolicySource, StaticPolicy
from server.storage.database import Database
from server.toolkit import ToolContext

if TYPE_CHECKING:
    from server.approvals.desk import ApprovalDesk
    from server.guards.rails import Guardrails
    from server.mail import MailSender
    from server.observability.metrics import Metrics

logger = logging.getLogger("server.callpath")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_audit_id() -> str:
    return f"aud_{uuid.uuid4().hex}"


INTERNAL_ERROR = Refusal(
    status="failed",
    code="internal_error",
    message="The action could not be completed because of an internal error; nothing was changed.",
)


def key_owner(principal: Principal) -> str:
    """Whose idempotency keys these are: the principal, within its tenant (a stored answer never crosses tenants)."""
    if principal.tenant is None:
        return principal.key
    return identity_key(principal.issuer, principal.client_id, principal.subject, principal.tenant)


AFTER_COMMIT = "mandate.after_commit"
"""``Session.info`` key: work to run once the session's transaction has committed (an approved external effect's
provider call, which must never run inside the approver's transaction)."""


def after_commit(session: Any, work: Callable[[], Awaitable[object]]) -> None:
    """Run ``work`` after the transaction of ``session`` commits (never if it rolls back)."""
    session.info.setdefault(AFTER_COMMIT, []).append(work)


class CallPathCore:
    """The state the steps share, and the recording helpers they all use."""

    def __init__(
        self,
        db: Database,
        catalog: ToolCatalog,
        *,
        instance: str,
        clock: Callable[[], datetime] = utcnow,
        policies: PolicySource | None = None,
        keys: IdempotencySettings | None = None,
        effects: EffectsSettings | None = None,
        providers: Mapping[str, Any] | None = None,
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.instance = instance
        self.clock = clock
        self.policies: PolicySource = policies if policies is not None else StaticPolicy(load_policy())
        self.keys = keys if keys is not None else IdempotencySettings()
        self.effects = effects if effects is not None else EffectsSettings()
        self.providers: dict[str, Any] = dict(providers or {})
        """The outside systems configured, by kind (``"payments"``): a tool's :class:`~server.toolkit.External`
        effect runs through the intent protocol when its provider is here (docs/effects.md)."""
        self.approvals: ApprovalDesk | None = None
        """Where actions that need a human go (:mod:`server.approvals`); set by :func:`server.app.open_mandate`.
        Without it a decision of ``approval`` is refused (fail closed), never allowed."""
        self.guards: Guardrails | None = None
        """Suspensions, rate limits and circuit breakers (:mod:`server.guards`); set by ``open_mandate``."""
        self.metrics: Metrics | None = None
        self.tracer: trace.Tracer = trace.get_tracer("mandate")
        """Where the call path's spans come from (:mod:`server.observability.tracing`)."""
        self.mail: MailSender | None = None
        """The mail sender tools may use (:mod:`server.mail`); set by :func:`server.app.open_mandate`."""

    def sensitive(self, tool: str) -> frozenset[str]:
        """The argument fields of ``tool`` that records and lists show redacted."""
        entry = self.catalog.get(tool)
        return entry.spec.sensitive if entry is not None else frozenset()

    def context(self, principal: Principal, session: Any, now: datetime, audit_id: str, tool: str) -> ToolContext:
        return ToolContext(
            principal=principal,
            session=session,
            now=now,
            audit_id=audit_id,
            tool_name=tool,
            approvals=self.approvals,
            mail=self.mail,
        )

    async def gate(self, admitted: Admitted, ctx: ToolContext, *, lock: bool) -> Gate:
        """Step 4, inside the call's transaction (:func:`server.callpath.decide.decide_in`)."""
        spec, policy = admitted.entry.spec, self.policies.current()
        return await decide_in(spec, admitted.args, admitted.policy_args, ctx, policy, lock=lock)

    def record(self, call: Invocation, outcome: Outcome, audit_id: str, at: datetime, kind: str = "call") -> NewRecord:
        return build_record(self.instance, call, outcome, audit_id, at, kind=kind)

    async def record_alone(
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
        record = self.record(call, outcome, record_id, self.clock(), kind)

        async def work(session: Any) -> None:
            await chain.append(session, record)
            if claimed is not None and claimed[0] is not None:
                await idempotency.complete(session, claimed[0], claimed[1], record_id)

        await self.db.run_in_transaction(work)
        return record_id

    async def release(self, claimed: idempotency.Claimed | None) -> None:
        """Give an idempotency key back (nothing happened), so a retry runs anew."""
        if claimed is None:
            return
        try:
            await idempotency.release(self.db, claimed)
        except Exception:  # the claim's lease runs out, and a retry takes it over then
            logger.exception("an idempotency claim could not be released")

    async def internal_error(self, call: Invocation, audit_id: str) -> tuple[types.CallToolResult, str]:
        """Fail closed: the action did not happen (or, its commit in doubt, may have); say so, and record it if the
        database lets us."""
        # called from an ``except`` block: a database outage answers retryably (server.callpath.outage)
        refusal = failure_refusal(sys.exc_info()[1], INTERNAL_ERROR)
        ended = "unknown" if refusal.code == COMMIT_IN_DOUBT.code else "failed"  # it may have committed
        outcome = Outcome("error", ended, refusal.code, refusal.message)
        try:
            await self.record_alone(call, outcome, audit_id=audit_id)
        except Exception:
            logger.exception("the failure of %s could not be recorded either", call.tool)
        return refusal_result(refusal.model_copy(update={"audit_id": audit_id})), "error"
