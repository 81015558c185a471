"""The audit record table and the chain head that keeps the hash chain linear.

One row per invocation, whatever its outcome (DESIGN.md section 6). ``seq`` is the record's position in the chain;
``prev_hash`` and ``hash`` link it to the record before. The single ``audit_head`` row is updated by every append,
inside the same transaction as the record: its row lock (PostgreSQL) or the database write lock (SQLite,
``BEGIN IMMEDIATE``) makes concurrent writers take turns, so the chain never forks.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Text
from sqlmodel import Field, SQLModel

from server.storage.types import UTCDateTime

GENESIS_HASH = "0" * 64


class AuditRecord(SQLModel, table=True):
    __tablename__ = "audit_records"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    id: str = Field(unique=True, max_length=40)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    instance: str = Field(max_length=100)
    kind: str = Field(max_length=20, description="call, list, auth, approval")
    # who
    subject: str | None = Field(default=None, index=True, max_length=400)
    client_id: str | None = Field(default=None, index=True, max_length=400)
    issuer: str | None = Field(default=None, max_length=400)
    scopes: str | None = Field(default=None, sa_column=Column(Text))
    token_id: str | None = Field(default=None, max_length=200)
    tenant: str | None = Field(default=None, max_length=100)
    actor: str | None = Field(default=None, max_length=400)
    # from where
    transport: str = Field(max_length=20)
    client_address: str | None = Field(default=None, max_length=100)
    client_name: str | None = Field(default=None, max_length=200)
    client_version: str | None = Field(default=None, max_length=100)
    origin: str | None = Field(default=None, max_length=200, description="the HTTP Origin header (RFC 6454)")
    user_agent: str | None = Field(default=None, max_length=300, description="the HTTP User-Agent header")
    # what
    tool: str | None = Field(default=None, index=True, max_length=100)
    customer_id: str | None = Field(default=None, index=True, max_length=40)
    arguments: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    arguments_digest: str | None = Field(default=None, max_length=64)
    # how it was decided and how it ended
    decision: str = Field(index=True, max_length=20, description="allow, deny, approval, error")
    reason_code: str | None = Field(default=None, max_length=100)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    rule_id: str | None = Field(default=None, max_length=200)
    policy_version: str | None = Field(default=None, max_length=100)
    outcome: str = Field(
        max_length=30, description="succeeded, failed, refused, invalid_arguments, pending_approval, replayed, listed"
    )
    result_summary: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    latency_us: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    idempotency_key: str | None = Field(default=None, max_length=200)
    approval_id: str | None = Field(default=None, index=True, max_length=40)
    request_id: str | None = Field(default=None, max_length=100)
    trace_id: str | None = Field(default=None, index=True, max_length=32)
    # the chain
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """The chain's last position and hash: one row, id 1."""

    __tablename__ = "audit_head"

    id: int = Field(primary_key=True)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(max_length=64)
