"""What callers see of an approval: a summary for lists, the full request for approvers, the state for requesters.

Following SQLModel's "multiple models" split, tools return these models, never the table row: the requester's
claims and principal key stay in the database, and a requester sees only the state of its own request.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from server.approvals.models import Approval


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None


class Requester(BaseModel):
    subject: str
    client_id: str
    tenant: str | None = None
    actor: str | None = None


class ApprovalSummary(BaseModel):
    """One approval in a list."""

    approval_id: str
    status: Literal["pending", "executed", "failed", "rejected", "expired"]
    tool: str
    arguments: dict[str, Any] = Field(description="as the audit trail keeps them (sensitive values redacted)")
    customer_id: str | None = None
    requester: Requester
    rule: str | None = None
    reason: str | None = None
    created_at: str
    expires_at: str


class Decided(BaseModel):
    by_subject: str
    by_client_id: str
    at: str
    comment: str | None = None


class Outcome(BaseModel):
    """How the approved action ended: its result (``executed``) or why it was refused when run (``failed``)."""

    executed_at: str
    succeeded: bool
    code: str | None = None
    message: str | None = None
    result: dict[str, Any] | None = Field(default=None, description="the tool's answer (structured content)")
    audit_id: str | None = None


class ApprovalDetail(ApprovalSummary):
    """The full request an approver decides on, why it needed approval, and how it ended."""

    full_arguments: dict[str, Any] = Field(description="the exact arguments that will run if approved")
    arguments_digest: str
    requester_scopes: list[str]
    reason_code: str | None = None
    policy_version: str | None = None
    request_audit_id: str
    decided: Decided | None = None
    outcome: Outcome | None = None


class ApprovalState(BaseModel):
    """The state of one of the caller's own requests: pending, or decided and how it ended."""

    approval_id: str
    status: Literal["pending", "executed", "failed", "rejected", "expired"]
    tool: str
    message: str
    expires_at: str
    decided_at: str | None = None
    comment: str | None = None
    outcome: Outcome | None = None


def requester_of(approval: Approval) -> Requester:
    return Requester(
        subject=approval.requester_subject,
        client_id=approval.requester_client_id,
        tenant=approval.requester_tenant,
        actor=approval.requester_actor,
    )


def summary_of(approval: Approval, now: datetime | None = None) -> ApprovalSummary:
    return ApprovalSummary(
        approval_id=approval.id,
        status=approval.status if now is None else effective_status(approval, now),
        tool=approval.tool,
        arguments=_json(approval.arguments_redacted) or {},
        customer_id=approval.customer_id,
        requester=requester_of(approval),
        rule=approval.rule_id,
        reason=approval.reason,
        created_at=approval.created_at.isoformat(),
        expires_at=approval.expires_at.isoformat(),
    )


def outcome_of(approval: Approval) -> Outcome | None:
    if approval.executed_at is None:
        return None
    stored = _json(approval.result)
    content = stored.get("structuredContent") if isinstance(stored, dict) else None
    return Outcome(
        executed_at=approval.executed_at.isoformat(),
        succeeded=approval.status == "executed",
        code=approval.outcome_code,
        message=approval.outcome_message,
        result=content if isinstance(content, dict) else None,
        audit_id=approval.execution_audit_id,
    )


def detail_of(approval: Approval, now: datetime | None = None) -> ApprovalDetail:
    decided = None
    if approval.decided_at is not None:
        decided = Decided(
            by_subject=approval.decided_by_subject or "",
            by_client_id=approval.decided_by_client_id or "",
            at=approval.decided_at.isoformat(),
            comment=approval.decision_comment,
        )
    return ApprovalDetail(
        **summary_of(approval, now).model_dump(),
        full_arguments=_json(approval.arguments) or {},
        arguments_digest=approval.arguments_digest,
        requester_scopes=approval.requester_scopes.split(),
        reason_code=approval.reason_code,
        policy_version=approval.policy_version,
        request_audit_id=approval.request_audit_id,
        decided=decided,
        outcome=outcome_of(approval),
    )


_MESSAGES = {
    "pending": "The action is waiting for a human decision; nothing has been done yet. Check again later.",
    "executed": "A human approved the action and it was carried out once; its result is in outcome.",
    "failed": "A human approved the action, but it could not be carried out when it ran; outcome says why. "
    "Nothing was changed.",
    "rejected": "A human rejected the action; nothing was done.",
    "expired": "Nobody decided in time and the approval expired; nothing was done. Ask again if it is still needed.",
}


def effective_status(approval: Approval, now: datetime) -> str:
    """The status as of ``now``: a pending approval past its expiry is expired, even before the sweep marks it."""
    if approval.status == "pending" and approval.expires_at <= now:
        return "expired"
    return approval.status


def state_of(approval: Approval, now: datetime) -> ApprovalState:
    status = effective_status(approval, now)
    return ApprovalState(
        approval_id=approval.id,
        status=status,
        tool=approval.tool,
        message=_MESSAGES[status],
        expires_at=approval.expires_at.isoformat(),
        decided_at=_time(approval.decided_at),
        comment=approval.decision_comment,
        outcome=outcome_of(approval),
    )


def console_link(console_url: str | None, approval_id: str) -> str | None:
    """Where a person decides the approval in the web console (docs/console.md), when the console is served."""
    return f"{console_url.rstrip('/')}/approvals/{approval_id}" if console_url else None


def webhook_data(approval: Approval, console_url: str | None = None) -> dict[str, Any]:
    """What a webhook tells: the summary (arguments redacted), the decision, how the action ended, and the console
    page of the approval (``console_url``) when the console is on."""
    data = summary_of(approval).model_dump(mode="json")
    link = console_link(console_url, approval.id)
    if link is not None:
        data["console_url"] = link
    detail = detail_of(approval)
    if detail.decided is not None:  # the comment is free text, kept out as the audit trail keeps it out
        data["decided"] = detail.decided.model_dump(mode="json", exclude={"comment"})
    if detail.outcome is not None:
        data["outcome"] = detail.outcome.model_dump(mode="json", exclude={"result"})
    return data
