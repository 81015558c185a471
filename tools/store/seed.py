"""Demo data for the customer-service store: a few customers in two tenants, orders in every status.

Seeding is idempotent: a store that already has customers is left as it is. Order times are relative to the seeding
time, so "placed within N hours" conditions have something to act on.

With a payments provider configured, ``mandate seed`` also links every order to a paid payment at the provider
(:func:`orders_to_link`, then :func:`link_order_payment` once the provider made it), so refunds can go through the
provider's API. Linking is its own step, outside the seeding transaction: a provider call never runs inside a
database transaction, and an order already linked is never linked again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.money import Money
from tools.store.models import Customer, Order, OrderLine, OrderStatus


@dataclass(frozen=True)
class _Line:
    sku: str
    description: str
    quantity: int
    unit_price_minor: int


_CUSTOMERS = [
    ("cus_1001", "acme", "Ada Lovelace", "ada@example.com", "+44 20 7946 0001", 900),
    ("cus_1002", "acme", "Grace Hopper", "grace@example.com", "+1 202 555 0102", 600),
    ("cus_1003", "acme", "Alan Turing", "alan@example.org", "+44 20 7946 0003", 300),
    ("cus_1004", "globex", "Katherine Johnson", "kj@example.net", "+1 757 555 0104", 200),
    ("cus_1005", "globex", "Edsger Dijkstra", "ewd@example.nl", "+31 20 555 0105", 100),
]

_ORDERS: list[tuple[str, str, OrderStatus, str, timedelta, list[_Line]]] = [
    (
        "ord_5001",
        "cus_1001",
        OrderStatus.PENDING,
        "EUR",
        timedelta(hours=2),
        [_Line("SKU-KB-01", "Mechanical keyboard", 1, 12900), _Line("SKU-CB-02", "USB-C cable", 2, 1450)],
    ),
    (
        "ord_5002",
        "cus_1001",
        OrderStatus.SHIPPED,
        "EUR",
        timedelta(days=3),
        [_Line("SKU-MN-27", "27-inch monitor", 1, 34900)],
    ),
    (
        "ord_5003",
        "cus_1001",
        OrderStatus.DELIVERED,
        "EUR",
        timedelta(days=20),
        [_Line("SKU-HP-10", "Headphones", 1, 8999)],
    ),
    (
        "ord_5004",
        "cus_1002",
        OrderStatus.PROCESSING,
        "USD",
        timedelta(hours=30),
        [_Line("SKU-LP-14", "Laptop stand", 1, 4500), _Line("SKU-MS-03", "Wireless mouse", 1, 2999)],
    ),
    (
        "ord_5005",
        "cus_1002",
        OrderStatus.DELIVERED,
        "USD",
        timedelta(days=10),
        [_Line("SKU-DK-55", "Standing desk", 1, 59900)],
    ),
    (
        "ord_5006",
        "cus_1003",
        OrderStatus.PENDING,
        "GBP",
        timedelta(hours=1),
        [_Line("SKU-BK-42", "Book: On Computable Numbers", 3, 2500)],
    ),
    ("ord_5007", "cus_1004", OrderStatus.DELIVERED, "USD", timedelta(days=5), [_Line("SKU-TB-11", "Tablet", 1, 45000)]),
    (
        "ord_5008",
        "cus_1005",
        OrderStatus.PENDING,
        "EUR",
        timedelta(hours=4),
        [_Line("SKU-PN-01", "Fountain pen", 2, 7500)],
    ),
    (
        "ord_5009",
        "cus_1002",
        OrderStatus.DELIVERED,
        "JPY",
        timedelta(days=2),
        [_Line("SKU-TEA-9", "Matcha set", 1, 8800)],
    ),
]


async def seed_demo_store(session: AsyncSession, now: datetime) -> bool:
    """Add the demo data unless the store already has customers; return whether anything was added."""
    existing = (await session.exec(select(func.count()).select_from(Customer))).one()
    if existing:
        return False
    for customer_id, tenant, name, email, phone, days in _CUSTOMERS:
        session.add(
            Customer(
                id=customer_id,
                tenant=tenant,
                name=name,
                email=email,
                phone=phone,
                created_at=now - timedelta(days=days),
            )
        )
    await session.flush()
    for order_id, customer_id, status, currency, age, lines in _ORDERS:
        tenant = next(c[1] for c in _CUSTOMERS if c[0] == customer_id)
        total = sum(line.quantity * line.unit_price_minor for line in lines)
        session.add(
            Order(
                id=order_id,
                customer_id=customer_id,
                tenant=tenant,
                status=status,
                currency=currency,
                total_minor=total,
                refunded_minor=0,
                placed_at=now - age,
            )
        )
        await session.flush()
        for line in lines:
            session.add(
                OrderLine(
                    order_id=order_id,
                    sku=line.sku,
                    description=line.description,
                    quantity=line.quantity,
                    unit_price_minor=line.unit_price_minor,
                )
            )
    await session.flush()
    return True


@dataclass(frozen=True)
class OrderToLink:
    """A demo order that has no payment at the provider yet, with what a payment for it needs."""

    order_id: str
    tenant: str
    amount: Money
    customer_name: str
    customer_email: str


async def orders_to_link(session: AsyncSession) -> list[OrderToLink]:
    """Every order without a ``payment_ref`` that was paid for (not cancelled), oldest first."""
    query = (
        select(Order, Customer)
        .join(Customer, col(Customer.id) == col(Order.customer_id))
        .where(col(Order.payment_ref).is_(None), col(Order.status) != OrderStatus.CANCELLED)
        .order_by(col(Order.placed_at), col(Order.id))
    )
    return [
        OrderToLink(
            order_id=order.id,
            tenant=order.tenant,
            amount=Money.from_minor(order.total_minor, order.currency),
            customer_name=customer.name,
            customer_email=customer.email,
        )
        for order, customer in (await session.exec(query)).all()
    ]


async def link_order_payment(session: AsyncSession, order_id: str, payment_ref: str) -> bool:
    """Record the order's payment unless another seeding linked it first; return whether this one did."""
    statement = (
        update(Order).where(col(Order.id) == order_id, col(Order.payment_ref).is_(None)).values(payment_ref=payment_ref)
    )
    connection = await session.connection()
    return (await connection.execute(statement)).rowcount == 1
