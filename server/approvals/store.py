"""Reading and changing approvals in the caller's transaction; every change of status is a conditional UPDATE.

The conditional ``UPDATE approvals SET status = ... WHERE id = :id AND status = 'pending' AND expires_at > :now`` is
what makes a decision happen once: on PostgreSQL a second, racing UPDATE waits for the first transaction's row lock
and then finds the row no longer pending; on SQLite every writing transaction holds the database lock from
``BEGIN IMMEDIATE``. The number of rows changed says who won.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from server.approvals.models import TABLE, Approval, ApprovalStatus
from server.approvals.seal import ApprovalSeal
from server.audit.redaction import arguments_digest, canonical_json
from server.auth.principal import Principal


def new_approval_id() -> str:
    return f"apr_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """An action the decision sent to a human: what, exactly, and why."""

    tool: str
    arguments: Mapping[str, Any]
    arguments_redacted: Mapping[str, Any]
    request_audit_id: str
    rule_id: str | None = None
    waived_rules: tuple[str, ...] = ()
    reason_code: str | None = None
    reason: str | None = None
    policy_version: str | None = None
    customer_id: str | None = None
    idempotency_key: str | None = None


async def find_open(
    session: AsyncSession, requester: Principal, tool: str, digest: str, now: datetime
) -> Approval | None:
    """A pending, unexpired approval of the same requester (and tenant) for the same tool and exact arguments."""
    query = (
        select(Approval)
        .where(
            Approval.requester_key == requester.key,
            (
                col(Approval.requester_tenant).is_(None)
                if requester.tenant is None
                else Approval.requester_tenant == requester.tenant
            ),
            Approval.tool == tool,
            Approval.arguments_digest == digest,
            Approval.status == ApprovalStatus.PENDING,
            col(Approval.expires_at) > now,
        )
        .order_by(col(Approval.created_at))
        .limit(1)
    )
    return (await session.exec(query)).first()


async def open_request(
    session: AsyncSession,
    requester: Principal,
    request: ApprovalRequest,
    now: datetime,
    ttl: timedelta,
    seal: ApprovalSeal,
) -> tuple[Approval, bool]:
    """The pending approval for this request: an open one for the same exact request, else a new one.

    Returns the approval and whether it was created now. Asking again for the same thing while it waits does not
    put a second approval in front of a human.
    """
    digest = arguments_digest(request.arguments)
    existing = await find_open(session, requester, request.tool, digest, now)
    if existing is not None:
        return existing, False
    approval = Approval(
        id=new_approval_id(),
        status=ApprovalStatus.PENDING,
        created_at=now,
        expires_at=now + ttl,
        tool=request.tool,
        arguments=canonical_json(dict(request.arguments)),
        arguments_digest=digest,
        arguments_redacted=canonical_json(dict(request.arguments_redacted)),
        idempotency_key=request.idempotency_key,
        customer_id=request.customer_id,
        requester_key=requester.key,
        requester_subject=requester.subject,
        requester_client_id=requester.client_id,
        requester_issuer=requester.issuer,
        requester_scopes=" ".join(sorted(requester.scopes)),
        requester_tenant=requester.tenant,
        requester_actor=requester.actor,
        requester_token_id=requester.token_id,
        requester_claims=canonical_json(dict(requester.claims)),
        rule_id=request.rule_id,
        waived_rules=" ".join(request.waived_rules),
        reason_code=request.reason_code,
        reason=request.reason,
        policy_version=request.policy_version,
        request_audit_id=request.request_audit_id,
    )
    approval.seal = seal.seal(approval)
    session.add(approval)
    await session.flush()
    return approval, True


async def get(session: AsyncSession, approval_id: str) -> Approval | None:
    approval = await session.get(Approval, approval_id)
    if approval is not None:
        await session.refresh(approval)  # another transaction may have decided it since this session read it
    return approval


async def listing(
    session: AsyncSession, *, status: ApprovalStatus | None, tenant: str | None, limit: int, now: datetime
) -> Sequence[Approval]:
    """Approvals newest first, optionally of one status as of ``now`` (a pending approval past its expiry is
    expired, whether or not the sweep has marked it yet); only the tenant's when the reader belongs to one."""
    query = select(Approval)
    expires_at = col(Approval.expires_at)
    if status == ApprovalStatus.PENDING:
        query = query.where(Approval.status == status, expires_at > now)
    elif status == ApprovalStatus.EXPIRED:
        stored = col(Approval.status)
        overdue = and_(stored == ApprovalStatus.PENDING, expires_at <= now)
        query = query.where(or_(stored == status, overdue))
    elif status is not None:
        query = query.where(Approval.status == status)
    if tenant is not None:
        query = query.where(Approval.requester_tenant == tenant)
    query = query.order_by(col(Approval.created_at).desc(), col(Approval.id)).limit(limit)
    return (await session.exec(query)).all()


async def claim_decision(
    session: AsyncSession,
    approval_id: str,
    *,
    approver: Principal,
    status: ApprovalStatus,
    comment: str | None,
    audit_id: str,
    now: datetime,
) -> bool:
    """Move a pending, unexpired approval to ``status`` with the approver's identity; False if someone was first."""
    connection = await session.connection()
    statement = (
        update(TABLE)
        .where(TABLE.c.id == approval_id, TABLE.c.status == ApprovalStatus.PENDING, TABLE.c.expires_at > now)
        .values(
            status=status,
            decided_at=now,
            decided_by_key=approver.key,
            decided_by_subject=approver.subject,
            decided_by_client_id=approver.client_id,
            decision_comment=comment,
            decision_audit_id=audit_id,
        )
    )
    return (await connection.execute(statement)).rowcount == 1


async def record_execution(
    session: AsyncSession,
    approval_id: str,
    *,
    succeeded: bool,
    result_json: str,
    audit_id: str,
    code: str | None,
    message: str | None,
    now: datetime,
) -> None:
    """Store how the approved action ended, in the transaction that decided it."""
    connection = await session.connection()
    statement = (
        update(TABLE)
        .where(TABLE.c.id == approval_id)
        .values(
            status=ApprovalStatus.EXECUTED if succeeded else ApprovalStatus.FAILED,
            executed_at=now,
            execution_audit_id=audit_id,
            result=result_json,
            outcome_code=code,
            outcome_message=message,
        )
    )
    await connection.execute(statement)


async def expire_due(session: AsyncSession, now: datetime, limit: int = 200) -> list[str]:
    """Mark pending approvals past their expiry as expired; return their ids."""
    due = select(Approval.id).where(Approval.status == ApprovalStatus.PENDING, col(Approval.expires_at) <= now)
    ids = list((await session.exec(due.limit(limit))).all())
    if not ids:
        return []
    connection = await session.connection()
    statement = (
        update(TABLE)
        .where(TABLE.c.id.in_(ids), TABLE.c.status == ApprovalStatus.PENDING, TABLE.c.expires_at <= now)
        .values(status=ApprovalStatus.EXPIRED)
        .returning(TABLE.c.id)
    )
    return [str(row[0]) for row in (await connection.execute(statement)).all()]


def requester_principal(approval: Approval) -> Principal:
    """The requester as its verified token described it when it asked: the identity the approved action runs as.

    Only what the token said is kept (never the token); the audience and expiry of a token long gone do not matter
    to the run, so the principal is given none and the approval's expiry.
    """
    claims: Any = json.loads(approval.requester_claims)
    claims = claims if isinstance(claims, dict) else {}
    details = claims.get("authorization_details")
    return Principal(
        subject=approval.requester_subject,
        client_id=approval.requester_client_id,
        scopes=frozenset(approval.requester_scopes.split()),
        issuer=approval.requester_issuer,
        audience=(),
        expires_at=approval.expires_at,
        token_id=approval.requester_token_id,
        tenant=approval.requester_tenant,
        actor=approval.requester_actor,
        authorization_details=tuple(details) if isinstance(details, list) else (),
        claims=claims,
    )


def stored_arguments(approval: Approval) -> dict[str, Any]:
    """The exact arguments the approval is bound to, after checking they still match its digest."""
    arguments: Any = json.loads(approval.arguments)
    if not isinstance(arguments, dict) or arguments_digest(arguments) != approval.arguments_digest:
        raise ValueError("the stored arguments no longer match the digest the approval was bound to")
    return arguments
