"""Action lineage: from an effect to the audit record that caused it, its principal, its approval and its trace; and
from a principal to everything it did (DESIGN.md section 6; the issue's "lineage").

An :class:`Effect` is something a tool changed in the world (a refund, a cancelled order, an email change), found by
the tool catalog's own store (``tools.audit``), which knows which of its rows carry the ``audit_id`` of their cause.
This module knows only audit records: it resolves an effect's cause, the other records of the same approval
(request, decision, execution) in chain order, and a principal's records in a time range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from server.audit.chain import RECORDS
from server.audit.query import AuditFilter, AuditRow, fetch_rows, record_by_id, select_records
from server.audit.render import export_object


@dataclass(frozen=True, slots=True)
class Effect:
    """One change in the world and the id of the audit record of the invocation that made it."""

    kind: str
    """``refund``, ``order_cancellation``, ``account_change``, ..."""
    id: str
    audit_id: str | None
    summary: str
    details: dict[str, Any] = field(default_factory=dict[str, Any])


@dataclass(frozen=True, slots=True)
class Trail:
    """An effect with its cause: the record, and the approval's records when the action waited for one."""

    effect: Effect
    cause: AuditRow | None
    approval: Sequence[AuditRow] = ()

    def as_dict(self) -> dict[str, Any]:
        cause = self.cause
        return {
            "effect": {
                "kind": self.effect.kind,
                "id": self.effect.id,
                "summary": self.effect.summary,
                **self.effect.details,
            },
            "cause": export_object(cause) if cause is not None else None,
            "principal": _principal(cause) if cause is not None else None,
            "approval": [export_object(row) for row in self.approval],
            "trace_id": cause["trace_id"] if cause is not None else None,
        }


def _principal(row: AuditRow) -> dict[str, Any]:
    keys = ("subject", "client_id", "issuer", "scopes", "token_id", "tenant", "actor")
    return {key: row[key] for key in keys}


async def approval_records(session: AsyncSession, approval_id: str) -> list[AuditRow]:
    query = select_records(AuditFilter()).where(RECORDS.c.approval_id == approval_id).order_by(RECORDS.c.seq)
    return await fetch_rows(session, query)


async def trail_of(session: AsyncSession, effect: Effect) -> Trail:
    cause = await record_by_id(session, effect.audit_id) if effect.audit_id else None
    approval: list[AuditRow] = []
    if cause is not None and cause["approval_id"]:
        approval = [r for r in await approval_records(session, str(cause["approval_id"])) if r["id"] != cause["id"]]
    return Trail(effect, cause, approval)


async def activity_of(
    session: AsyncSession,
    *,
    client_id: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 10_000,
) -> list[AuditRow]:
    """Every record of a client and/or subject in ``since <= at < until``, in chain order."""
    audit_filter = AuditFilter(client_id=client_id, subject=subject, since=since, until=until)
    return await fetch_rows(session, select_records(audit_filter).order_by(RECORDS.c.seq).limit(limit))
