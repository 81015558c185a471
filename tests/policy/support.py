"""Helpers for the policy tests: policies written inline, requests for the decision function, store rows."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.money import Money
from scopes.policy import Caller, DecisionRequest, Policy, parse_policy
from tools.store.models import Customer, Order, OrderStatus

NOW = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)  # 10:00 in Amsterdam (CEST)
REFUNDS = frozenset({"customers:read", "orders:read", "refunds:create"})
LARGE = REFUNDS | {"refunds:create:large"}


def policy(text: str, source: str = "test-policy.toml") -> Policy:
    return parse_policy(textwrap.dedent(text).encode(), source)


def caller(scopes: frozenset[str] = REFUNDS, **extra: Any) -> Caller:
    return Caller(subject="agent:refunds", client_id="refunds-agent", issuer="https://issuer", scopes=scopes, **extra)


def eur(amount: str) -> Money:
    return Money.parse(amount, "EUR")


def order_facts(**changes: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "order_id": "ord_1",
        "customer_id": "cus_1",
        "tenant": "acme",
        "status": "delivered",
        "currency": "EUR",
        "placed_at": NOW - timedelta(days=3),
        "total": eur("9000.00"),
        "refunded": eur("0"),
        "refundable_left": eur("9000.00"),
    }
    facts.update(changes)
    return facts


def refund(
    amount: str,
    currency: str = "EUR",
    *,
    who: Caller | None = None,
    now: datetime = NOW,
    usage: Mapping[str, int | Money] | None = None,
    facts: Mapping[str, Any] | None = None,
    tool: str = "refund_create",
) -> DecisionRequest:
    return DecisionRequest(
        tool=tool,
        args={"order_id": "ord_1", "amount": Money.parse(amount, currency), "currency": currency, "reason": "damaged"},
        caller=who or caller(),
        now=now,
        facts=order_facts() if facts is None else facts,
        usage={"agent_refunds_daily": Money.parse("0", currency), "customer_refunds_30d": Money.parse("0", currency)}
        if usage is None
        else usage,
    )


async def add_orders(
    session: AsyncSession,
    count: int,
    *,
    prefix: str,
    placed_at: datetime,
    status: OrderStatus = OrderStatus.PENDING,
    total_minor: int = 10000,
    currency: str = "EUR",
    customers: int = 1,
    tenant: str = "acme",
) -> list[str]:
    """``count`` orders for ``customers`` new customers (round robin); return the order ids."""
    for c in range(customers):
        session.add(
            Customer(
                id=f"cus_{prefix}{c}",
                tenant=tenant,
                name=f"Customer {c}",
                email=f"{prefix}{c}@example.com",
                phone="+31 20 555 0000",
                created_at=placed_at - timedelta(days=400),
            )
        )
    await session.flush()
    ids = []
    for i in range(count):
        order_id = f"ord_{prefix}{i}"
        session.add(
            Order(
                id=order_id,
                customer_id=f"cus_{prefix}{i % customers}",
                tenant=tenant,
                status=status,
                currency=currency,
                total_minor=total_minor,
                refunded_minor=0,
                placed_at=placed_at,
            )
        )
        ids.append(order_id)
    await session.flush()
    return ids
