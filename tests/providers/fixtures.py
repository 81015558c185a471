"""Payments-provider fixtures for the whole suite (registered in tests/conftest.py through ``pytest_plugins``).

Every fixture runs a real localstripe HTTP server (:class:`server.providers.localstripe.LocalStripe`) on a free
127.0.0.1 port, with its own state file, its own random ``sk_test_`` key and nothing shared with other instances.
Mandate reaches it through the ``stripe`` SDK exactly as it would reach Stripe.

- ``localstripe``: an instance of this test's own, started; stop, kill (``SIGKILL``, "provider died mid-call"),
  pause/resume (``SIGSTOP``/``SIGCONT``, "provider hangs": calls time out) or restart it (same port, same state).
  From async code, restart through ``anyio.to_thread.run_sync(localstripe.restart)``. Stopped at teardown.
- ``localstripe_factory``: ``localstripe_factory()`` starts another instance (two providers, or two replicas'
  views); all are stopped at teardown.
- ``payments_settings``: ``[payments]`` settings reaching ``localstripe`` (timeout 10 s).
- ``payment_provider``: an open :class:`~server.providers.payments.PaymentProvider` on ``localstripe``.
- ``stripe_outside``: a plain synchronous ``stripe.StripeClient`` on ``localstripe``, for acting at the provider
  the way someone outside Mandate would (a refund made with a leaked key, a payment to refund).
- ``provider_settings``: the suite's ``settings`` with ``payments`` pointing at ``localstripe``.
- ``test_payment``: ``await test_payment(Money)`` makes a paid payment intent at ``localstripe``, returns its id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import stripe

from scopes.money import Money
from server.config import PaymentsSettings, Settings
from server.providers.localstripe import LocalStripe
from server.providers.payments import PaymentProvider, open_provider


@pytest.fixture
def localstripe_factory(tmp_path: Path) -> Iterator[Callable[[], LocalStripe]]:
    started: list[LocalStripe] = []

    def start() -> LocalStripe:
        instance = LocalStripe(tmp_path / f"localstripe-{len(started)}")
        started.append(instance)
        return instance.start()

    try:
        yield start
    finally:
        for instance in started:
            instance.kill()


@pytest.fixture
def localstripe(localstripe_factory: Callable[[], LocalStripe]) -> LocalStripe:
    return localstripe_factory()


@pytest.fixture
def payments_settings(localstripe: LocalStripe) -> PaymentsSettings:
    return localstripe.payments_settings()


@pytest.fixture
async def payment_provider(payments_settings: PaymentsSettings) -> AsyncIterator[PaymentProvider]:
    provider = open_provider(payments_settings)
    assert provider is not None
    try:
        yield provider
    finally:
        await provider.aclose()


@pytest.fixture
def stripe_outside(localstripe: LocalStripe) -> stripe.StripeClient:
    return stripe.StripeClient(localstripe.api_key, base_addresses={"api": localstripe.api_base}, max_network_retries=0)


@pytest.fixture
def provider_settings(settings: Settings, payments_settings: PaymentsSettings) -> Settings:
    return settings.model_copy(update={"payments": payments_settings})


@pytest.fixture
def test_payment(payment_provider: PaymentProvider) -> Callable[[Money], Awaitable[str]]:
    async def make(amount: Money) -> str:
        return await payment_provider.create_test_payment(
            amount=amount,
            customer_name="Test Customer",
            customer_email="test@example.com",
            description="a test payment",
            metadata={"purpose": "test"},
        )

    return make
