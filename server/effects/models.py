"""The ``effect_intents`` table: one row per effect Mandate asked an outside system to make (docs/effects.md).

An intent is written in the decision's transaction (status ``started``, with its audit record and the ledger
reservation) before the provider is called, and resolved exactly once, by a conditional ``UPDATE ... WHERE status =
'started'``: ``completed`` (the provider made the object; its id, amount and status are kept), or ``failed`` (the
provider definitely did not; the reservation was released). ``conflict`` marks the one case a person must look at:
the provider's object turned up after the intent was resolved as failed. An intent still ``started`` past
``lease_until`` is in doubt, and the reconciler asks the provider.

:class:`EffectIntent` declares the table (and serves the listings); the call path and the reconcilers work with
:class:`Intent`, the same columns as plain values. Everything the reconciler of another process needs is kept here:
the plan the tool prepared, the exact arguments (as the approvals table keeps them, for the outcome's audit
record), and the requester as its token described it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Text
from sqlmodel import Field, SQLModel

from server.storage.types import UTCDateTime

STARTED = "started"
COMPLETED = "completed"
FAILED = "failed"
CONFLICT = "conflict"
STATUSES = (STARTED, COMPLETED, FAILED, CONFLICT)


class EffectIntent(SQLModel, table=True):
    __tablename__ = "effect_intents"
    __table_args__ = (Index("ix_effect_intents_status_lease", "status", "lease_until"),)

    id: str = Field(primary_key=True, max_length=40, description="int_ + 32 hex")
    tool: str = Field(max_length=100)
    provider: str = Field(max_length=40, description="the kind of provider, e.g. payments")
    provider_name: str = Field(max_length=40, description="the provider itself, e.g. stripe")
    status: str = Field(max_length=20, index=True)
    audit_id: str = Field(unique=True, max_length=40, description="the audit record of the decision (txn a)")
    provider_key: str = Field(max_length=200, description="the idempotency key sent to the provider")
    arguments: str = Field(sa_column=Column(Text, nullable=False))
    arguments_digest: str = Field(max_length=64)
    plan: str = Field(sa_column=Column(Text, nullable=False))
    principal: str = Field(sa_column=Column(Text, nullable=False), description="the requester's verified claims")
    principal_key: str = Field(sa_column=Column(Text, nullable=False))
    customer_id: str | None = Field(default=None, max_length=40, index=True)
    approval_id: str | None = Field(default=None, max_length=40, index=True)
    call_key: str | None = Field(default=None, max_length=200, description="the agent's idempotency key")
    call_key_id: str | None = Field(default=None, max_length=64, description="its idempotency_keys row")
    transport: str = Field(max_length=20)
    request_id: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    lease_until: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    attempts: int = Field(default=0)
    """How many times a reconciler took the intent up."""
    reconcile_token: str | None = Field(default=None, max_length=64)
    resolved_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    resolved_by: str | None = Field(default=None, max_length=20, description="call or reconciler")
    outcome_audit_id: str | None = Field(default=None, max_length=40)
    provider_object_id: str | None = Field(default=None, max_length=100)
    amount_minor: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    currency: str | None = Field(default=None, max_length=8)
    provider_status: str | None = Field(default=None, max_length=20)
    error_code: str | None = Field(default=None, max_length=100)
    error_message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    """Why the last attempt to learn the outcome did not (a timeout, the provider unreachable); never a secret."""
    answer: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    """The final answer (MCP ``CallToolResult`` JSON) once resolved: what a retry with the agent's key gets."""


TABLE = EffectIntent.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Intent:
    """One ``effect_intents`` row as the call path and the reconcilers read and write it: plain values, read and
    written with prepared statements (:mod:`server.effects.intents`), never an ORM object in a session. The fields
    are the table's columns, in the order :data:`COLUMNS` selects them."""

    id: str
    tool: str
    provider: str
    provider_name: str
    status: str
    audit_id: str
    provider_key: str
    arguments: str
    arguments_digest: str
    plan: str
    principal: str
    principal_key: str
    customer_id: str | None
    approval_id: str | None
    call_key: str | None
    call_key_id: str | None
    transport: str
    request_id: str | None
    created_at: datetime
    lease_until: datetime
    attempts: int = 0
    reconcile_token: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    outcome_audit_id: str | None = None
    provider_object_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    provider_status: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    last_error: str | None = None
    answer: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Intent:
        """The intent of a row selected with :data:`COLUMNS`."""
        return cls(*row)

    def values(self) -> dict[str, Any]:
        """Every column's value, by name: what inserting the intent stores."""
        return {name: getattr(self, name) for name in FIELD_NAMES}


FIELD_NAMES: tuple[str, ...] = tuple(field.name for field in fields(Intent))
if set(FIELD_NAMES) != set(TABLE.c.keys()):  # pragma: no cover - a column added to one and not the other
    raise RuntimeError(f"Intent and effect_intents differ: {sorted(set(FIELD_NAMES) ^ set(TABLE.c.keys()))}")
COLUMNS = tuple(TABLE.c[name] for name in FIELD_NAMES)
"""The table's columns in :class:`Intent`'s order."""
RESOLUTION = (
    "status",
    "resolved_at",
    "resolved_by",
    "outcome_audit_id",
    "provider_object_id",
    "amount_minor",
    "currency",
    "provider_status",
    "error_code",
    "error_message",
    "answer",
)
"""The columns resolving an intent writes (:mod:`server.effects.outcome`)."""
