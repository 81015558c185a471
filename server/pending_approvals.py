"""Where an action that needs a human's approval goes: the one place the approvals feature plugs in.

Today nothing but the audit record is stored (decision ``approval``, outcome ``pending_approval``), and the approval
id is that record's id, so a supervisor can find it in the trail. The approvals table (a later issue) implements
:class:`ApprovalSink` (e.g. over ``server.approvals.ApprovalDesk.open``) to store the pending action bound to its
arguments' digest, requester and expiry, in the same transaction as the audit record, and passes it to the
Enforcer; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.policy import Decision
from server.auth.principal import Principal
from server.outcomes import PendingApproval


@dataclass(frozen=True, slots=True)
class PendingAction:
    """An action the policy sent for approval, exactly as it was asked for."""

    audit_id: str
    principal: Principal
    tool: str
    arguments: dict[str, Any]
    arguments_digest: str
    decision: Decision
    requested_at: datetime
    customer_id: str | None = None
    idempotency_key: str | None = None


class ApprovalSink(Protocol):
    """Stores a pending action (in the caller's transaction) and says how the agent can follow it up."""

    async def request(self, session: AsyncSession, pending: PendingAction) -> PendingApproval:
        """Record ``pending``; return the answer the agent gets."""
        ...


class AuditOnlyApprovals:
    """The pending action is its audit record: its id is the approval id, and nothing else is stored."""

    def __init__(self, ttl: timedelta = timedelta(hours=24)) -> None:
        self.ttl = ttl

    async def request(self, session: AsyncSession, pending: PendingAction) -> PendingApproval:
        del session  # the audit record, written by the Enforcer in this transaction, is the whole record
        return PendingApproval(
            approval_id=pending.audit_id,
            message=(
                f"{pending.decision.reason} A human must approve this before it happens; nothing has been done yet."
            ),
            expires_at=(pending.requested_at + self.ttl).isoformat(),
            check_with=(
                f"a supervisor with the audit trail: approval id {pending.audit_id} is the audit record of this "
                "request (decision 'approval')"
            ),
            rule=pending.decision.rule_id,
            audit_id=pending.audit_id,
        )
