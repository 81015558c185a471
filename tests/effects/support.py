"""Helpers for the effects tests: link the demo orders to payments, read intents, budgets and records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import col, func, select

from scopes.money import Money
from scopes.policy.results import LedgerKey
from server import ledger
from server.audit.models import AuditRecord
from server.effects.models import STARTED, EffectIntent, Intent
from server.ledger import LedgerBucket
from server.storage.database import Database
from tools.store.models import Order, Refund

REFUND = {"order_id": "ord_5001", "amount": "12.50", "currency": "EUR", "reason": "arrived damaged"}


async def link_orders(db: Database, refs: dict[str, str] | None = None) -> None:
    """Give every demo order a payment reference (``pi_<order id>`` unless ``refs`` names one)."""

    async def work(session: Any) -> None:
        orders = (await session.exec(select(Order))).all()
        for order in orders:
            ref = (refs or {}).get(order.id, f"pi_{order.id}")
            await session.exec(update(Order).where(col(Order.id) == order.id).values(payment_ref=ref))

    await db.run_in_transaction(work)


def started_intent(created_at: datetime, lease_until: datetime, **columns: Any) -> Intent:
    """A ``started`` intent of the refund tool as the decision's transaction writes it; ``columns`` override."""
    values: dict[str, Any] = {
        "id": "int_1",
        "tool": "refund_create",
        "provider": "payments",
        "provider_name": "double",
        "status": STARTED,
        "audit_id": "aud_1",
        "provider_key": "mandate-aud_1",
        "arguments": "{}",
        "arguments_digest": "",
        "plan": "{}",
        "principal": "{}",
        "principal_key": "agent:refunds",
        "customer_id": None,
        "approval_id": None,
        "call_key": None,
        "call_key_id": None,
        "transport": "http",
        "request_id": None,
        "created_at": created_at,
        "lease_until": lease_until,
    }
    return Intent(**{**values, **columns})


async def intents(db: Database) -> list[EffectIntent]:
    async with db.session() as session:
        return list((await session.exec(select(EffectIntent).order_by(col(EffectIntent.created_at)))).all())


async def spent(db: Database, budget: str = "agent_refunds_daily") -> int:
    async with db.session() as session:
        query = select(func.coalesce(func.sum(LedgerBucket.spent), 0)).where(LedgerBucket.budget == budget)
        return int((await session.exec(query)).one())


async def customer_window(db: Database, customer_id: str = "cus_1001", currency: str = "EUR") -> int:
    """What the customer's 30-day refund budget reads now, in minor units (the policy's rolling window)."""
    now = datetime.now(UTC)
    key = LedgerKey("customer_refunds_30d", customer_id, currency, "rolling", now - timedelta(days=30))

    async def work(session: Any) -> int:
        usage = (await ledger.totals(session, [key], at=now, lock=False))[key.budget]
        return usage.minor if isinstance(usage, Money) else int(usage)

    return await db.run_in_transaction(work)


async def refunds(db: Database) -> list[Refund]:
    async with db.session() as session:
        return list((await session.exec(select(Refund))).all())


async def order(db: Database, order_id: str = "ord_5001") -> Order:
    async with db.session() as session:
        found = await session.get(Order, order_id)
    assert found is not None
    return found


async def records(db: Database, tool: str = "refund_create") -> list[AuditRecord]:
    async with db.session() as session:
        query = select(AuditRecord).where(AuditRecord.tool == tool).order_by(col(AuditRecord.seq))
        return list((await session.exec(query)).all())
