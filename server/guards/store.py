"""The guards' tables: suspensions (who is stopped, by whom, why, until whom resumed) and window counters.

Both live in the shared database, so every replica sees the same state (docs/operations.md).

- ``suspensions``: one row per suspension of a client id, a subject, a tenant or a token (``jti``), optionally
  bound to one issuer. A row is active until ``resumed_at`` is set; it is never deleted, so the history of who
  stopped an agent, why, and who let it go again stays next to the audit trail. ``source`` says whether a person
  (``manual``) or a circuit breaker (``breaker:<id>``) suspended it; remediation starts from the same identity
  fields (``kind``/``value``/``issuer``) that the audit records of the principal carry.
- ``guard_counters``: one row per (counter, holder, window start) holding a count. :func:`count_up` raises it with
  one conditional upsert (``INSERT ... ON CONFLICT DO UPDATE SET count = count + 1 WHERE count < :limit
  RETURNING count``), so two replicas can never both take the last slot of a window: there is no read-then-write.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Column, Index, Table, UniqueConstraint, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from server.storage.types import UTCDateTime

SUSPENSION_KINDS = ("client", "subject", "tenant", "token", "principal")


class Suspension(SQLModel, table=True):
    __tablename__ = "suspensions"
    __table_args__ = (Index("ix_suspensions_active", "resumed_at", "kind", "value"),)

    id: str = Field(primary_key=True, max_length=40)
    kind: str = Field(max_length=10, description="client | subject | tenant | token | principal (an identity key)")
    value: str = Field(max_length=400, description="the client id, subject, tenant or jti")
    issuer: str | None = Field(default=None, max_length=400, description="only this issuer's tokens; None: any")
    reason: str = Field(max_length=1000)
    source: str = Field(max_length=120, description="manual, or breaker:<id>")
    suspended_by: str = Field(max_length=400)
    suspended_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    audit_id: str | None = Field(default=None, max_length=40)
    resumed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    resumed_by: str | None = Field(default=None, max_length=400)
    resume_reason: str | None = Field(default=None, max_length=1000)
    resume_audit_id: str | None = Field(default=None, max_length=40)


class GuardCounter(SQLModel, table=True):
    __tablename__ = "guard_counters"
    __table_args__ = (UniqueConstraint("name", "holder", "window_start", name="uq_guard_counter"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120, description="rate:<limit id> or breaker:<breaker id>")
    holder: str = Field(max_length=400)
    window_start: int = Field(sa_column=Column(BigInteger, nullable=False), description="Unix seconds")
    count: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))


SUSPENSIONS: Table = SQLModel.metadata.tables[Suspension.__tablename__]
COUNTERS: Table = SQLModel.metadata.tables[GuardCounter.__tablename__]


def window_of(now: datetime, window: timedelta) -> tuple[int, float]:
    """The fixed window ``now`` falls in (its start, Unix seconds) and the seconds left until it ends."""
    size = int(window.total_seconds())
    at = now.timestamp()
    start = int(at // size) * size
    return start, start + size - at


async def count_up(
    session: AsyncSession,
    name: str,
    holder: str,
    window_start: int,
    expires_at: datetime,
    *,
    limit: int | None = None,
) -> int | None:
    """Add one to a window's counter and return the new count; with ``limit``, ``None`` when it is already full
    (nothing is added then). One statement: exact under concurrency on PostgreSQL and SQLite alike."""
    values = {"name": name, "holder": holder, "window_start": window_start, "count": 1, "expires_at": expires_at}
    bind = session.bind
    maker = pg_insert if bind is not None and bind.dialect.name == "postgresql" else sqlite_insert
    statement = maker(COUNTERS).values(**values)
    where = COUNTERS.c.count < limit if limit is not None else None
    upsert = statement.on_conflict_do_update(
        index_elements=["name", "holder", "window_start"], set_={"count": COUNTERS.c.count + 1}, where=where
    ).returning(COUNTERS.c.count)
    connection = await session.connection()
    found = (await connection.execute(upsert)).scalar()
    return int(found) if found is not None else None


async def purge_counters(session: AsyncSession, now: datetime) -> int:
    """Drop counters of windows that have ended (kept a while after, for inspection)."""
    connection = await session.connection()
    result = await connection.execute(delete(COUNTERS).where(COUNTERS.c.expires_at < now))
    return int(result.rowcount or 0)
