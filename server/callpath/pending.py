"""An action the policy sent for a human's approval, exactly as it was asked for.

The Enforcer builds a :class:`PendingAction` when a decision is ``approval`` and hands it to the approval desk
(:meth:`server.approvals.ApprovalDesk.request`), which stores it in the call's transaction, bound to the digest of
its arguments, its requester and an expiry (docs/approvals.md). Kept apart from :mod:`server.approvals` so that the
call path and the desk depend on this small value, not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scopes.policy import Decision
from server.auth.principal import Principal


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
