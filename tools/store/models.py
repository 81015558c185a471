"""Tables of the demo customer-service store (SQLModel), with money as integer minor units and UTC timestamps.

The split between table models and the ``*Public`` models that tools return follows SQLModel's "multiple models"
pattern, so a tool result never carries a column it should not (a tenant, an internal digest).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from server.storage.types import UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc_column(nullable: bool = False) -> Column[datetime]:
    return Column(UTCDateTime(), nullable=nullable)


class OrderStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


class Customer(SQLModel, table=True):
    __tablename__ = "customers"

    id: str = Field(primary_key=True, max_length=40)
    tenant: str = Field(index=True, max_length=64)
    name: str = Field(max_length=200)
    email: str = Field(max_length=320, index=True)
    phone: str = Field(max_length=40)
    created_at: datetime = Field(sa_column=_utc_column())


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_customer_placed", "customer_id", "placed_at"),)

    id: str = Field(primary_key=True, max_length=40)
    customer_id: str = Field(foreign_key="customers.id", max_length=40)
    tenant: str = Field(index=True, max_length=64)
    status: OrderStatus = Field(max_length=20)
    currency: str = Field(max_length=3)
    total_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    refunded_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    placed_at: datetime = Field(sa_column=_utc_column())
    cancelled_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    cancel_reason: str | None = Field(default=None, max_length=500)
    cancel_audit_id: str | None = Field(
        default=None, max_length=40, description="the audit record of the invocation that cancelled the order"
    )
    cancelled_from: str | None = Field(
        default=None, max_length=20, description="the status the order had when it was cancelled (to reopen it)"
    )
    payment_ref: str | None = Field(default=None, max_length=255, index=True)
    """The payment at the payments provider that paid for this order (a Stripe payment intent ``pi_...``); ``None``
    when no provider is configured: refunds are then rows in this store only."""


class OrderLine(SQLModel, table=True):
    __tablename__ = "order_lines"

    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(foreign_key="orders.id", index=True, max_length=40)
    sku: str = Field(max_length=40)
    description: str = Field(max_length=200)
    quantity: int
    unit_price_minor: int = Field(sa_column=Column(BigInteger, nullable=False))


class Refund(SQLModel, table=True):
    __tablename__ = "refunds"

    id: str = Field(primary_key=True, max_length=40)
    order_id: str = Field(foreign_key="orders.id", index=True, max_length=40)
    customer_id: str = Field(foreign_key="customers.id", index=True, max_length=40)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    reason: str = Field(max_length=500)
    created_at: datetime = Field(sa_column=_utc_column())
    created_by: str = Field(max_length=400, description="the principal key of the agent that refunded")
    audit_id: str = Field(index=True, max_length=40, description="the audit record of the invocation that refunded")
    provider_refund_id: str | None = Field(
        default=None, max_length=255, index=True, description="the refund at the payments provider (Stripe re_...)"
    )


class AccountChange(SQLModel, table=True):
    __tablename__ = "account_changes"

    id: str = Field(primary_key=True, max_length=40)
    customer_id: str = Field(foreign_key="customers.id", index=True, max_length=40)
    field_name: str = Field(max_length=40)
    old_value: str = Field(max_length=320)
    new_value: str = Field(max_length=320)
    created_at: datetime = Field(sa_column=_utc_column())
    created_by: str = Field(max_length=400)
    audit_id: str = Field(index=True, max_length=40)


class Remediation(SQLModel, table=True):
    """One compensation of one effect (``mandate remediate``): at most one per effect (its kind, its id and the
    audit record that made it), whoever runs it and however often, so remediating twice compensates once."""

    __tablename__ = "remediations"
    __table_args__ = (
        UniqueConstraint("effect_kind", "effect_id", "compensates_audit_id", name="uq_remediation_effect"),
    )

    id: str = Field(primary_key=True, max_length=40)
    effect_kind: str = Field(max_length=40, description="refund, account_change, order_cancellation")
    effect_id: str = Field(max_length=40)
    compensates_audit_id: str = Field(
        index=True, max_length=40, description="the audit record of the invocation whose effect this compensates"
    )
    action: str = Field(max_length=40, description="restored_email, reopened_order, follow_up")
    note: str = Field(max_length=500)
    created_at: datetime = Field(sa_column=_utc_column())
    created_by: str = Field(max_length=400, description="the principal key of the person who remediated")
    audit_id: str = Field(index=True, max_length=40, description="the audit record of the compensating call")


class EmailChangeRequest(SQLModel, table=True):
    """An email change waiting for the customer to confirm the new address with the code mailed to it.

    The code itself is never stored: ``code_hash`` is scrypt (RFC 7914) over the code, salted with the request id.
    """

    __tablename__ = "email_change_requests"

    id: str = Field(primary_key=True, max_length=40)
    customer_id: str = Field(foreign_key="customers.id", index=True, max_length=40)
    tenant: str = Field(max_length=64)
    new_email: str = Field(max_length=320)
    code_hash: str = Field(max_length=128)
    status: str = Field(max_length=20, description="pending, confirmed, superseded, locked or expired")
    attempts: int = Field(default=0)
    created_at: datetime = Field(sa_column=_utc_column())
    expires_at: datetime = Field(sa_column=_utc_column())
    decided_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    created_by: str = Field(max_length=400)
    audit_id: str = Field(max_length=40, description="the audit record of the request")
    change_id: str | None = Field(default=None, max_length=40, description="the account change once confirmed")
