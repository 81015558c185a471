"""When the reconciler may read the provider's "no such object" (HTTP 404) as "the refund never happened": only while
the provider still shows a refund it is known to have made. A payments key changed to another account answers 404
for everything, and taking that at its word would give back the budget and the order's hold of refunds that were
made. Real parts: the Stripe adapter over the ``stripe`` SDK, two localstripe servers (two accounts), SQLite or
PostgreSQL.
"""

from __future__ import annotations

import pytest

# The real Stripe adapter and the localstripe fixtures come with the payments provider (server/providers/).
pytest.importorskip("server.providers.localstripe", reason="the payments provider (server/providers) is not installed")

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from scopes.money import Money
from server.app import open_mandate
from server.config import Settings
from server.effects import reconciler
from server.effects.models import COMPLETED, FAILED, STARTED
from server.providers.localstripe import LocalStripe
from server.providers.payments import PaymentProvider, ProviderInDoubt, open_provider
from tests.conftest import Harness
from tests.effects import support
from tools.store.seed import seed_demo_store

pytestmark = pytest.mark.anyio


class AnswerLost:
    """The real provider, with the answer to the next refunds lost: after it was made (``after``) or before the
    request was sent (``before``). Everything else goes to the real provider."""

    def __init__(self, real: PaymentProvider) -> None:
        self.real = real
        self.lose: str | None = None

    async def refund(self, **request: Any) -> Any:
        if self.lose == "before":
            raise ProviderInDoubt("the connection was reset before the request was sent")
        made = await self.real.refund(**request)
        if self.lose == "after":
            raise ProviderInDoubt("the provider did not answer in time")
        return made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
async def stripe_harness(provider_settings: Settings) -> AsyncIterator[tuple[Harness, AnswerLost]]:
    mandate = await open_mandate(provider_settings, local_dev_jwks=True)
    try:
        await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, datetime.now(UTC)))
        provider = AnswerLost(mandate.enforcer.providers["payments"])
        mandate.enforcer.providers["payments"] = provider
        payment = await provider.create_test_payment(
            amount=Money.parse("158.00", "EUR"),
            customer_name="Ada Lovelace",
            customer_email="ada@example.com",
            description="order ord_5001",
            metadata={"order_id": "ord_5001"},
        )
        await support.link_orders(mandate.db, {"ord_5001": payment})
        yield Harness(mandate), provider
    finally:
        await mandate.aclose()


async def _refund(harness: Harness) -> Any:
    async with harness.client("refunds") as client:
        return await client.call_tool("refund_create", support.REFUND)


def _past_the_lease(harness: Harness) -> None:
    """Move the server's clock past every lease so far (the reconciler reads the same clock)."""
    clock = harness.mandate.enforcer.clock
    seconds = harness.mandate.settings.effects.lease_seconds + 1
    harness.mandate.enforcer.clock = lambda: clock() + timedelta(seconds=seconds)


async def _in_doubt(harness: Harness) -> Any:
    result = await _refund(harness)
    assert result.structured_content["code"] == "effect_in_doubt", result.content
    return next(i for i in await support.intents(harness.mandate.db) if i.status == STARTED)


async def test_a_refund_in_doubt_of_a_payment_the_provider_does_not_know_fails_once_it_shows_an_earlier_refund(
    stripe_harness: tuple[Harness, AnswerLost],
) -> None:
    harness, provider = stripe_harness
    db = harness.mandate.db
    assert not (await _refund(harness)).is_error  # made and recorded: what the provider is known to have made
    await support.link_orders(db, {"ord_5001": "pi_this_payment_does_not_exist"})
    provider.lose = "before"
    doubted = await _in_doubt(harness)
    assert await support.spent(db) == 2500  # held while in doubt

    _past_the_lease(harness)
    [resolution] = await reconciler.reconcile_due(harness.mandate.enforcer)
    assert (resolution.intent_id, resolution.status, resolution.detail) == (doubted.id, FAILED, "effect_not_made")
    assert await support.spent(db) == 1250 and await support.customer_window(db) == 1250
    assert (await support.order(db)).refunded_minor == 1250


async def test_a_refund_in_doubt_stays_in_doubt_when_the_provider_no_longer_shows_the_refunds_it_made(
    stripe_harness: tuple[Harness, AnswerLost], localstripe_factory: Callable[[], LocalStripe]
) -> None:
    harness, provider = stripe_harness
    db = harness.mandate.db
    assert not (await _refund(harness)).is_error
    provider.lose = "after"  # the second refund is made at the provider; its answer is lost
    doubted = await _in_doubt(harness)

    other_account = open_provider(localstripe_factory().payments_settings())  # the key changed to another account
    assert other_account is not None
    harness.mandate.enforcer.providers["payments"] = other_account
    try:
        _past_the_lease(harness)
        [resolution] = await reconciler.reconcile_due(harness.mandate.enforcer)
    finally:
        harness.mandate.enforcer.providers["payments"] = provider
        await other_account.aclose()
    assert (resolution.intent_id, resolution.status) == (doubted.id, "in_doubt")
    assert "payments key" in resolution.detail and "cannot be seen there either" in resolution.detail
    [kept] = [i for i in await support.intents(db) if i.id == doubted.id]
    assert kept.status == STARTED and "payments key" in (kept.last_error or "")
    assert await support.spent(db) == 2500 and await support.customer_window(db) == 2500  # nothing given back
    assert (await support.order(db)).refunded_minor == 2500

    _past_the_lease(harness)  # back on the account that made it: the refund is found and recorded
    [resolution] = await reconciler.reconcile_due(harness.mandate.enforcer)
    assert (resolution.intent_id, resolution.status) == (doubted.id, COMPLETED)
    assert len(await support.refunds(db)) == 2 and await support.spent(db) == 2500


async def test_a_refund_made_with_the_old_key_stays_in_doubt_after_a_refund_completes_with_the_new_one(
    stripe_harness: tuple[Harness, AnswerLost], localstripe_factory: Callable[[], LocalStripe]
) -> None:
    harness, provider = stripe_harness
    db = harness.mandate.db
    assert not (await _refund(harness)).is_error  # made at the first account
    provider.lose = "after"  # made there too; its answer is lost
    doubted = await _in_doubt(harness)

    other_account = open_provider(localstripe_factory().payments_settings())  # the key changed to another account
    assert other_account is not None
    harness.mandate.enforcer.providers["payments"] = other_account
    try:
        payment = await other_account.create_test_payment(
            amount=Money.parse("158.00", "EUR"),
            customer_name="Ada Lovelace",
            customer_email="ada@example.com",
            description="order ord_5002",
            metadata={"order_id": "ord_5002"},
        )
        await support.link_orders(db, {"ord_5002": payment})
        async with harness.client("refunds") as client:  # a refund made and completed with the new key
            made = await client.call_tool("refund_create", {**support.REFUND, "order_id": "ord_5002"})
        assert not made.is_error, made.content
        _past_the_lease(harness)
        resolutions = await reconciler.reconcile_due(harness.mandate.enforcer)
    finally:
        harness.mandate.enforcer.providers["payments"] = provider
        await other_account.aclose()
    [resolution] = [r for r in resolutions if r.intent_id == doubted.id]
    assert resolution.status == "in_doubt" and "payments key" in resolution.detail  # the new refund vouches for nothing
    assert await support.spent(db) == 3750  # three refunds made, none given back


async def test_a_404_with_no_refund_ever_completed_at_the_provider_leaves_the_refund_in_doubt(
    stripe_harness: tuple[Harness, AnswerLost],
) -> None:
    harness, provider = stripe_harness
    db = harness.mandate.db
    await support.link_orders(db, {"ord_5001": "pi_this_payment_does_not_exist"})
    provider.lose = "before"
    doubted = await _in_doubt(harness)

    _past_the_lease(harness)
    [resolution] = await reconciler.reconcile_due(harness.mandate.enforcer)
    assert (resolution.intent_id, resolution.status) == (doubted.id, "in_doubt")
    assert "no refund_create it completed before this one" in resolution.detail
    assert await support.spent(db) == 1250  # nothing is assumed: the amount stays reserved
