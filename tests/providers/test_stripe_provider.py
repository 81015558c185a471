"""The Stripe provider against a real localstripe over HTTP: refunds, lookups by intent, and how failures classify."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import anyio
import pytest
import stripe

from scopes.money import Money
from server.config import PaymentsSettings
from server.providers import stripe as stripe_provider
from server.providers.localstripe import LocalStripe
from server.providers.payments import (
    META_AUDIT,
    META_INTENT,
    META_TOOL,
    PaymentProvider,
    ProviderInDoubt,
    ProviderRefused,
    ProviderUnavailable,
    open_provider,
)
from server.providers.stripe import StripeProvider

pytestmark = pytest.mark.anyio

EUR = "EUR"
MakePayment = Callable[[Money], Awaitable[str]]


def eur(minor: int) -> Money:
    return Money.from_minor(minor, EUR)


def meta(intent: str) -> dict[str, str]:
    return {META_INTENT: intent, META_AUDIT: f"aud_{intent}", META_TOOL: "refund_create"}


async def test_a_refund_reaches_the_payment_with_its_metadata_and_comes_back_as_a_provider_refund(
    payment_provider: PaymentProvider, test_payment: MakePayment, stripe_outside: stripe.StripeClient
) -> None:
    payment = await test_payment(eur(8999))
    refund = await payment_provider.refund(
        payment_ref=payment, amount=eur(1250), idempotency_key="key-1", metadata=meta("int_1")
    )
    assert (refund.payment_ref, refund.amount, refund.status) == (payment, eur(1250), "succeeded")
    assert refund.metadata == meta("int_1") and refund.intent_id == "int_1" and refund.audit_id == "aud_int_1"
    assert refund.created.tzinfo is UTC and abs(datetime.now(UTC) - refund.created) < timedelta(minutes=5)
    seen = stripe_outside.v1.refunds.retrieve(refund.id)  # what the provider itself holds
    assert (seen.amount, seen.currency, seen.payment_intent) == (1250, "eur", payment)


async def test_a_refund_is_found_again_by_its_intent_because_localstripe_ignores_the_idempotency_key(
    payment_provider: PaymentProvider, test_payment: MakePayment
) -> None:
    payment = await test_payment(eur(8999))
    first = await payment_provider.refund(
        payment_ref=payment, amount=eur(100), idempotency_key="same", metadata=meta("int_a")
    )
    again = await payment_provider.refund(
        payment_ref=payment, amount=eur(100), idempotency_key="same", metadata=meta("int_a")
    )
    await payment_provider.refund(payment_ref=payment, amount=eur(200), idempotency_key="other", metadata=meta("int_b"))
    assert first.id != again.id  # the fake made two: only the lookup by metadata can be relied on
    found = await payment_provider.find_refund(payment_ref=payment, intent_id="int_a")
    assert found is not None and found.id in (first.id, again.id) and found.intent_id == "int_a"
    other = await payment_provider.find_refund(payment_ref=payment, intent_id="int_b")
    assert other is not None and other.amount == eur(200)
    assert await payment_provider.find_refund(payment_ref=payment, intent_id="int_never") is None


async def test_lookups_page_through_every_refund_of_the_payment(
    payment_provider: PaymentProvider, test_payment: MakePayment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stripe_provider, "PAGE_SIZE", 2)
    payment = await test_payment(eur(8999))
    for n in range(5):
        await payment_provider.refund(
            payment_ref=payment, amount=eur(10), idempotency_key=f"k{n}", metadata=meta(f"i{n}")
        )
    listed = [refund async for refund in payment_provider.refunds_of(payment)]
    assert sorted(r.intent_id or "" for r in listed) == [f"i{n}" for n in range(5)]
    oldest = await payment_provider.find_refund(payment_ref=payment, intent_id="i0")
    assert oldest is not None and oldest.intent_id == "i0"


async def test_refunds_since_lists_newest_first_and_leaves_out_older_ones(
    payment_provider: PaymentProvider, test_payment: MakePayment
) -> None:
    payment = await test_payment(eur(8999))
    await payment_provider.refund(payment_ref=payment, amount=eur(10), idempotency_key="a", metadata=meta("old"))
    everything = [r async for r in payment_provider.refunds_since(None)]
    assert [r.intent_id for r in everything] == ["old"]
    future = [r async for r in payment_provider.refunds_since(datetime.now(UTC) + timedelta(hours=1))]
    assert future == []
    recent = [r async for r in payment_provider.refunds_since(everything[0].created)]
    assert [r.intent_id for r in recent] == ["old"]  # "since" includes its own second


async def test_an_unknown_payment_is_a_definite_refusal_with_stripes_reason(payment_provider: PaymentProvider) -> None:
    with pytest.raises(ProviderRefused) as refused:
        await payment_provider.refund(
            payment_ref="pi_doesnotexist00", amount=eur(100), idempotency_key="k", metadata=meta("x")
        )
    assert refused.value.http_status == 404 and refused.value.code == "resource_missing"
    with pytest.raises(ProviderRefused):
        await payment_provider.find_refund(payment_ref="pi_doesnotexist00", intent_id="x")


async def test_a_reference_that_is_not_a_stripe_payment_is_refused_without_a_call(
    payment_provider: PaymentProvider,
) -> None:
    with pytest.raises(ProviderRefused) as refused:
        await payment_provider.refund(payment_ref="ord_5001", amount=eur(100), idempotency_key="k", metadata={})
    assert refused.value.code == "invalid_payment_ref"


async def test_metadata_beyond_stripes_limits_is_refused_before_anything_is_sent(
    payment_provider: PaymentProvider, test_payment: MakePayment
) -> None:
    payment = await test_payment(eur(8999))
    for bad in ({"k" * 41: "v"}, {"k": "v" * 501}, {f"k{n}": "v" for n in range(51)}):
        with pytest.raises(ProviderRefused) as refused:
            await payment_provider.refund(payment_ref=payment, amount=eur(100), idempotency_key="k", metadata=bad)
        assert refused.value.code == "invalid_metadata"
    assert [r async for r in payment_provider.refunds_of(payment)] == []


async def test_a_wrong_key_is_refused_as_authentication_without_naming_the_key(localstripe: LocalStripe) -> None:
    wrong = "sk_test_thisisnotthekey0123456789"
    provider = StripeProvider(api_key=wrong, api_base=localstripe.api_base)
    try:
        with pytest.raises(ProviderRefused) as refused:
            await provider.find_refund(payment_ref="pi_anything000000", intent_id="x")
    finally:
        await provider.aclose()
    assert (refused.value.http_status, refused.value.code) == (401, "provider_authentication_failed")
    assert wrong not in str(refused.value) and localstripe.api_key not in str(refused.value)


async def test_a_provider_killed_before_the_call_leaves_it_in_doubt(
    localstripe: LocalStripe, payment_provider: PaymentProvider, test_payment: MakePayment
) -> None:
    payment = await test_payment(eur(8999))
    localstripe.kill()
    with pytest.raises(ProviderInDoubt) as doubt:
        await payment_provider.refund(payment_ref=payment, amount=eur(100), idempotency_key="k", metadata=meta("i"))
    assert "may or may not" in str(doubt.value)
    await anyio.to_thread.run_sync(localstripe.start)  # same port, same state: the payment is still there
    assert await payment_provider.find_refund(payment_ref=payment, intent_id="i") is None


async def test_a_hung_provider_times_out_in_doubt_within_the_configured_timeout(
    localstripe: LocalStripe, test_payment: MakePayment
) -> None:
    payment = await test_payment(eur(8999))
    provider = open_provider(localstripe.payments_settings(timeout_seconds=0.5))
    assert provider is not None
    localstripe.pause()
    started = time.monotonic()
    try:
        with pytest.raises(ProviderInDoubt) as doubt:
            await provider.refund(payment_ref=payment, amount=eur(100), idempotency_key="k", metadata=meta("hung"))
    finally:
        localstripe.resume()
        await provider.aclose()
    assert time.monotonic() - started < 30  # bounded (0.5 s asked; generous for a loaded machine), never retried
    assert "no answer within 0.5 s" in str(doubt.value)


async def test_a_restarted_provider_still_holds_its_refunds(
    localstripe: LocalStripe, payment_provider: PaymentProvider, test_payment: MakePayment
) -> None:
    payment = await test_payment(eur(8999))
    made = await payment_provider.refund(payment_ref=payment, amount=eur(300), idempotency_key="k", metadata=meta("r"))
    port = localstripe.port
    await anyio.to_thread.run_sync(localstripe.restart)
    assert localstripe.port == port
    found = await payment_provider.find_refund(payment_ref=payment, intent_id="r")
    assert found == made


async def test_two_instances_never_share_state(localstripe_factory: Callable[[], LocalStripe]) -> None:
    one, two = localstripe_factory(), localstripe_factory()
    assert one.port != two.port and one.state_file != two.state_file
    first = open_provider(one.payments_settings())
    second = open_provider(two.payments_settings())
    assert first is not None and second is not None
    try:
        payment = await first.create_test_payment(
            amount=eur(500), customer_name="A", customer_email="a@example.com", description="d", metadata={}
        )
        await first.refund(payment_ref=payment, amount=eur(100), idempotency_key="k", metadata=meta("only-one"))
        assert [r async for r in second.refunds_since(None)] == []
        with pytest.raises(ProviderRefused):
            await second.find_refund(payment_ref=payment, intent_id="only-one")
    finally:
        await first.aclose()
        await second.aclose()


async def test_test_payments_are_never_created_with_a_live_key() -> None:
    provider = StripeProvider(api_key="rk_live_" + "x" * 24, api_base="http://127.0.0.1:9")
    try:
        with pytest.raises(ProviderUnavailable):
            await provider.create_test_payment(
                amount=eur(100), customer_name="A", customer_email="a@example.com", description="d", metadata={}
            )
    finally:
        await provider.aclose()


def test_no_provider_configured_means_none() -> None:
    assert open_provider(PaymentsSettings()) is None


def _error(
    cls: type[stripe.StripeError], status: int | None, code: str | None = None, message: str = "m"
) -> stripe.StripeError:
    extra = {"param": None} if issubclass(cls, (stripe.InvalidRequestError, stripe.CardError)) else {}
    return cls(message, http_status=status, code=code, headers={"request-id": "req_123"}, **extra)


@pytest.mark.parametrize(
    "error",
    [
        _error(stripe.APIConnectionError, None),
        _error(stripe.APIError, 500),
        _error(stripe.APIError, 503),
        _error(stripe.IdempotencyError, 409),
        _error(stripe.IdempotencyError, 400, "idempotency_key_in_use"),
        _error(stripe.InvalidRequestError, 409),
        _error(stripe.RateLimitError, 429, "lock_timeout"),
    ],
    ids=["connection", "500", "503", "409-idempotency", "400-idempotency", "409", "429"],
)
def test_answers_that_may_hide_a_refund_are_in_doubt(error: stripe.StripeError) -> None:
    result = stripe_provider.classify(error)
    assert isinstance(result, ProviderInDoubt)
    if error.http_status is not None:
        assert "req_123" in str(result)  # the request id, for a human to look up at Stripe


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (_error(stripe.InvalidRequestError, 400, "charge_already_refunded"), "charge_already_refunded"),
        (_error(stripe.InvalidRequestError, 404, None), "resource_missing"),
        (_error(stripe.CardError, 402, "card_declined"), "card_declined"),
        (_error(stripe.AuthenticationError, 401, None), "provider_authentication_failed"),
        (_error(stripe.PermissionError, 403, None), "provider_permission_denied"),
        (_error(stripe.InvalidRequestError, 400, None), "provider_refused"),
    ],
)
def test_other_client_errors_are_definite_refusals_carrying_stripes_code(error: stripe.StripeError, code: str) -> None:
    result = stripe_provider.classify(error)
    assert isinstance(result, ProviderRefused) and result.code == code and result.http_status == error.http_status


def test_anything_key_shaped_is_scrubbed_from_a_provider_message() -> None:
    key = "rk_live_51Habc0123456789xyz"
    message = f"Invalid API Key provided: {key}; also sk_test_****wxyz and whsec_abcdef12"
    result = stripe_provider.classify(_error(stripe.AuthenticationError, 401, message=message), key)
    assert "rk_live" not in str(result) and "sk_test" not in str(result) and "whsec_" not in str(result)
    assert str(result).count("[key]") == 3
