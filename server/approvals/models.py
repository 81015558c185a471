"""The approvals table: an action that waits for a human, bound to the exact arguments, its requester and an expiry.

DESIGN.md section 2 ("Approval"): a pending action bound to a hash of its exact arguments, its requester, an expiry,
and a decision by someone else. The row keeps everything needed to run the action later exactly as it was asked for,
under the requester's identity: the tool, the canonical JSON of the arguments and their digest, and the requester's
verified identity (principal key, subject, client, scopes and claims; never the token itself).

Statuses: ``pending`` until a decision; then ``executed`` (approved, and the action ran), ``failed`` (approved, but
a condition checked again at execution refused it, e.g. the order shipped meanwhile), ``rejected``; or ``expired``
when nobody decided in time. Every transition out of ``pending`` is a conditional ``UPDATE ... WHERE status =
'pending'``, so it happens once whatever the number of racing approvers or replicas.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index, Table, Text
from sqlmodel import Field, SQLModel

from server.storage.types import UTCDateTime


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    EXECUTED = "executed"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"


TERMINAL = frozenset({ApprovalStatus.EXECUTED, ApprovalStatus.FAILED, ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED})


def _utc(nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(UTCDateTime(), nullable=nullable, index=index)


def _text(nullable: bool = True) -> Column[str]:
    return Column(Text, nullable=nullable)


class Approval(SQLModel, table=True):
    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_requester_tool_digest", "requester_key", "tool", "arguments_digest"),)

    id: str = Field(primary_key=True, max_length=40)
    status: str = Field(index=True, max_length=20)
    created_at: datetime = Field(sa_column=_utc(index=True))
    expires_at: datetime = Field(sa_column=_utc())
    # what was asked for, exactly
    tool: str = Field(max_length=100)
    arguments: str = Field(sa_column=_text(nullable=False), description="canonical JSON of the exact arguments")
    arguments_digest: str = Field(max_length=64, description="SHA-256 of the canonical JSON (as in the audit record)")
    arguments_redacted: str = Field(sa_column=_text(nullable=False), description="as the audit record keeps them")
    idempotency_key: str | None = Field(default=None, max_length=200)
    customer_id: str | None = Field(default=None, max_length=40)
    # by whom (from the verified token at the time of the request)
    requester_key: str = Field(sa_column=_text(nullable=False))
    requester_subject: str = Field(max_length=400)
    requester_client_id: str = Field(max_length=400)
    requester_issuer: str = Field(max_length=400)
    requester_scopes: str = Field(sa_column=_text(nullable=False))
    requester_tenant: str | None = Field(default=None, index=True, max_length=100)
    requester_actor: str | None = Field(default=None, max_length=400)
    requester_token_id: str | None = Field(default=None, max_length=200)
    requester_claims: str = Field(default="{}", sa_column=_text(nullable=False))
    # why it needs a human
    rule_id: str | None = Field(default=None, max_length=200)
    waived_rules: str = Field(default="", sa_column=_text(nullable=False))
    """The rules (space-separated ids) whose outcome was ``approval``: approving waives them for this action only."""
    reason_code: str | None = Field(default=None, max_length=100)
    reason: str | None = Field(default=None, sa_column=_text())
    policy_version: str | None = Field(default=None, max_length=100)
    request_audit_id: str = Field(max_length=40)
    seal: str | None = Field(default=None, max_length=80, description="HMAC over the action (server.approvals.seal)")
    # the decision
    decided_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    decided_by_key: str | None = Field(default=None, sa_column=_text())
    decided_by_subject: str | None = Field(default=None, max_length=400)
    decided_by_client_id: str | None = Field(default=None, max_length=400)
    decision_comment: str | None = Field(default=None, sa_column=_text())
    decision_audit_id: str | None = Field(default=None, max_length=40)
    # the execution
    executed_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    execution_audit_id: str | None = Field(default=None, max_length=40)
    outcome_code: str | None = Field(default=None, max_length=100)
    outcome_message: str | None = Field(default=None, sa_column=_text())
    result: str | None = Field(default=None, sa_column=_text(), description="the action's answer, CallToolResult JSON")


TABLE: Table = SQLModel.metadata.tables[Approval.__tablename__]
