"""Reading the audit trail: filters, pages by ``seq`` with opaque cursors, and time bounds (DESIGN.md section 6).

The same :class:`AuditFilter` serves ``mandate audit tail|export`` and the ``audit_search`` tool: by principal (its
``sub`` or its ``client_id``), tool, decision, outcome, kind, customer and a half-open time range
``since <= at < until``. Pages are keyset pages on ``seq`` (no ``OFFSET``), so they stay fast and stable while
records are appended. A cursor is opaque to callers: the last ``seq`` seen and a fingerprint of the filters it was
issued for, base64url-encoded; a cursor used with other filters is refused rather than silently misapplied.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from server.audit.chain import RECORDS

AuditRow = Mapping[str, Any]
"""One audit record as read from the database: column name -> value."""

_RELATIVE = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class BadQuery(ValueError):
    """A filter, time or cursor cannot be understood; the message says which and why."""


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An RFC 3339 / ISO 8601 date or date-time (UTC when it has no offset), or a relative age such as ``15m``,
    ``24h`` or ``7d`` (that long before ``now``)."""
    value = text.strip()
    relative = _RELATIVE.fullmatch(value)
    if relative:
        amount, unit = int(relative.group(1)), _UNITS[relative.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise BadQuery(f"not a time: {text!r} (use e.g. 2025-01-31, 2025-01-31T09:00:00Z or 24h)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which records to read; every field left ``None`` matches everything."""

    principal: str | None = None
    """A ``sub`` or a ``client_id``."""
    subject: str | None = None
    client_id: str | None = None
    tool: str | None = None
    decision: str | None = None
    outcome: str | None = None
    kind: str | None = None
    customer_id: str | None = None
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        c = RECORDS.c
        where: list[ColumnElement[bool]] = []
        if self.principal is not None:
            where.append(or_(c.subject == self.principal, c.client_id == self.principal))
        for column, value in (
            (c.subject, self.subject),
            (c.client_id, self.client_id),
            (c.tool, self.tool),
            (c.decision, self.decision),
            (c.outcome, self.outcome),
            (c.kind, self.kind),
            (c.customer_id, self.customer_id),
            (c.tenant, self.tenant),
        ):
            if value is not None:
                where.append(column == value)
        if self.since is not None:
            where.append(c.at >= self.since)
        if self.until is not None:
            where.append(c.at < self.until)
        return where

    def fingerprint(self) -> str:
        parts = [f"{k}={v.isoformat() if isinstance(v, datetime) else v}" for k, v in sorted(asdict(self).items())]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def encode_cursor(seq: int, audit_filter: AuditFilter) -> str:
    raw = f"v1.{seq}.{audit_filter.fingerprint()}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, audit_filter: AuditFilter) -> int:
    """The ``seq`` a cursor continues from; :class:`BadQuery` if it is malformed or was issued for other filters."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, seq, fingerprint = raw.split(".")
        position = int(seq)
    except ValueError:
        raise BadQuery("the cursor is not one this server issued") from None
    if version != "v1" or position < 0:
        raise BadQuery("the cursor is not one this server issued")
    if fingerprint != audit_filter.fingerprint():
        raise BadQuery("the cursor was issued for other filters; repeat the first search with these filters")
    return position


def select_records(audit_filter: AuditFilter) -> Select[Any]:
    return select(RECORDS).where(*audit_filter.conditions())


async def fetch_rows(session: AsyncSession, query: Select[Any]) -> list[AuditRow]:
    connection = await session.connection()
    result = await connection.execute(query)
    return [dict(row._mapping) for row in result]


async def page_newest_first(
    session: AsyncSession, audit_filter: AuditFilter, *, limit: int, before_seq: int | None = None
) -> tuple[list[AuditRow], int | None]:
    """Up to ``limit`` matching records, newest first, older than ``before_seq``; and the ``seq`` to continue
    before, or ``None`` on the last page."""
    query = select_records(audit_filter)
    if before_seq is not None:
        query = query.where(RECORDS.c.seq < before_seq)
    rows = await fetch_rows(session, query.order_by(RECORDS.c.seq.desc()).limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (int(rows[-1]["seq"]) if more and rows else None)


async def rows_after(
    session: AsyncSession, audit_filter: AuditFilter, after_seq: int, *, limit: int
) -> Sequence[AuditRow]:
    """Up to ``limit`` matching records after ``after_seq``, oldest first (for export and follow)."""
    query = select_records(audit_filter).where(RECORDS.c.seq > after_seq).order_by(RECORDS.c.seq).limit(limit)
    return await fetch_rows(session, query)


async def record_by_id(session: AsyncSession, identifier: str) -> AuditRow | None:
    """A record by its id (``aud_...``) or its position in the chain (a number)."""
    column = RECORDS.c.seq if identifier.isdigit() else RECORDS.c.id
    value: int | str = int(identifier) if identifier.isdigit() else identifier
    rows = await fetch_rows(session, select(RECORDS).where(column == value))
    return rows[0] if rows else None


async def records_by_ids(session: AsyncSession, identifiers: Sequence[str]) -> dict[str, AuditRow]:
    if not identifiers:
        return {}
    rows = await fetch_rows(session, select(RECORDS).where(RECORDS.c.id.in_(list(identifiers))))
    return {str(row["id"]): row for row in rows}
