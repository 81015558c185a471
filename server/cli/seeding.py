"""Seeding the demo store, and linking its orders to paid payments when a payments provider is configured.

``mandate seed`` and ``mandate dev`` both come here. The demo rows are written in one transaction
(:func:`tools.store.seed.seed_demo_store`); then, with a provider, each order without a payment gets one at the
provider (a test customer and a confirmed payment intent paid with Stripe's test card) and its ``payment_ref`` is
stored, one order at a time, each provider call outside any database transaction. A second run links only what
is still unlinked. A crash between the provider call and the link leaves an unused test payment at the provider,
nothing else; a live key is refused before anything is created.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from server.cli.common import CommandError
from server.config import Settings
from server.providers.payments import PaymentProvider, ProviderError, open_provider
from server.storage.database import Database
from tools.store.seed import link_order_payment, orders_to_link, seed_demo_store


@dataclass(frozen=True)
class Seeded:
    added: bool
    """Whether demo rows were added (``False``: the store already had data)."""
    linked: int | None
    """How many orders were linked to a payment now; ``None`` when no provider is configured."""

    def describe(self) -> str:
        text = "seeded the demo store" if self.added else "the store already has data; nothing seeded"
        if self.linked is not None:
            text += f"; linked {self.linked} order(s) to payments at the provider"
        return text


async def _link(session: AsyncSession, *, order_id: str, payment_ref: str) -> bool:
    return await link_order_payment(session, order_id, payment_ref)


async def link_demo_orders(db: Database, provider: PaymentProvider) -> int:
    """Give every unlinked order a paid test payment at ``provider``; return how many were linked."""
    async with db.session() as session:
        pending = await orders_to_link(session)
    linked = 0
    for order in pending:
        payment = await provider.create_test_payment(
            amount=order.amount,
            customer_name=order.customer_name,
            customer_email=order.customer_email,
            description=f"Mandate demo customer ({order.tenant})",
            metadata={"mandate_order": order.order_id, "mandate_tenant": order.tenant},
        )
        if await db.run_in_transaction(functools.partial(_link, order_id=order.order_id, payment_ref=payment)):
            linked += 1
    return linked


async def seed(settings: Settings) -> Seeded:
    """Seed the demo store and, with a provider configured, link its orders (see the module docstring)."""
    from server.app import open_database

    db, _catalog = await open_database(settings)
    try:
        now = datetime.now(UTC)
        added = await db.run_in_transaction(lambda session: seed_demo_store(session, now))
        provider = open_provider(settings)
        if provider is None:
            return Seeded(added, None)
        try:
            return Seeded(added, await link_demo_orders(db, provider))
        except ProviderError as exc:
            raise CommandError(f"could not link the demo orders to payments at the provider: {exc}") from None
        finally:
            await provider.aclose()
    finally:
        await db.dispose()
