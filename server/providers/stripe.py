"""The Stripe payments provider: :class:`~server.providers.payments.PaymentProvider` over the official ``stripe`` SDK.

Calls go through ``stripe.StripeClient`` (the SDK's client object, not its module-level globals, so two providers
in one process never share a key) and its ``*_async`` methods, with ``max_network_retries=0`` and a bounded HTTP
transport (:mod:`server.providers.stripe_http`). Stripe API reference: "Refunds" (create, list), "Errors" (HTTP
status codes and error types), "Idempotent requests", "Metadata".

How an SDK error is classified (docs/decisions.md, "Payments provider"):

==============================================  ====================  =========================================
what Stripe answered                            raised                why
==============================================  ====================  =========================================
no answer: timeout, connection refused/reset    ``ProviderInDoubt``   the request may have reached Stripe
5xx (``APIError``)                              ``ProviderInDoubt``   Stripe may have acted before failing
409, or any ``IdempotencyError``                ``ProviderInDoubt``   a request with this key exists or runs
429 (``RateLimitError``, lock timeouts)         ``ProviderInDoubt``   as agreed with the protocol: retry later
other 4xx (invalid request, card, auth, perm)   ``ProviderRefused``   Stripe refused; nothing happened there
==============================================  ====================  =========================================

The API key lives only inside the ``StripeClient``. Every message that leaves this module is built from Stripe's
error ``code`` and ``message`` after :func:`scrub` removed anything key-shaped, and is raised ``from None`` so the
SDK exception (which carries response headers and body) is not chained into a logged traceback.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import stripe

from scopes.money import Money, MoneyError
from server.config import PaymentsSettings
from server.providers.payments import (
    META_INTENT,
    ProviderError,
    ProviderInDoubt,
    ProviderRefund,
    ProviderRefused,
    ProviderUnavailable,
    RefundStatus,
)
from server.providers.stripe_http import Httpx2StripeClient

PAGE_SIZE: Final = 100
"""Stripe's largest page for list calls."""

_KEY_SHAPED = re.compile(r"\b(?:sk|rk|pk|whsec)_[A-Za-z0-9_*]{4,}")
_STATUSES: Mapping[str, RefundStatus] = {
    "succeeded": "succeeded",
    "pending": "pending",
    "requires_action": "pending",
    "failed": "failed",
    "canceled": "canceled",
}
_DEFAULT_CODES: Mapping[int, str] = {
    401: "provider_authentication_failed",
    402: "provider_payment_failed",
    403: "provider_permission_denied",
    404: "resource_missing",
}
_TEST_CARD: Final[Mapping[str, Any]] = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}
"""Stripe's documented test Visa ("Testing" page); only ever sent in test mode."""
_MAX_MESSAGE: Final = 300


def scrub(text: str, secret: str | None = None) -> str:
    """``text`` with the key itself and anything shaped like a Stripe key or secret replaced, cut to a sane length."""
    if secret:
        text = text.replace(secret, "[key]")
    text = _KEY_SHAPED.sub("[key]", text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def classify(error: stripe.StripeError, secret: str | None = None) -> ProviderError:
    """The :class:`ProviderRefused` or :class:`ProviderInDoubt` an SDK error means (see the module's table)."""
    status = error.http_status
    message = scrub(error.user_message or type(error).__name__, secret)
    request = f" (Stripe request {error.request_id})" if error.request_id else ""
    if isinstance(error, stripe.APIConnectionError) or status is None:
        return ProviderInDoubt(f"{message}; the call may or may not have reached Stripe{request}")
    if isinstance(error, stripe.IdempotencyError) or status in (409, 429) or status >= 500:
        return ProviderInDoubt(f"Stripe answered HTTP {status}: {message}{request}")
    if 400 <= status < 500:
        code = scrub(error.code or _DEFAULT_CODES.get(status, "provider_refused"), secret)
        return ProviderRefused(code, message, http_status=status)
    return ProviderInDoubt(f"Stripe answered HTTP {status}: {message}{request}")  # 1xx/3xx: not an answer


def is_live_key(key: str) -> bool:
    return key.startswith(("sk_live_", "rk_live_"))


def _check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Stripe's metadata limits ("Metadata"): 50 keys, key names up to 40 characters, values up to 500."""
    if len(metadata) > 50:
        raise ProviderRefused("invalid_metadata", "at most 50 metadata keys")
    for key, value in metadata.items():
        if not key or len(key) > 40 or "[" in key or "]" in key:
            raise ProviderRefused("invalid_metadata", f"metadata key {key[:40]!r} is not a valid Stripe key")
        if not isinstance(value, str) or len(value) > 500:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ProviderRefused("invalid_metadata", f"metadata value for {key!r} must be a string of <= 500 chars")
    return dict(metadata)


def _reference(value: Any) -> str | None:
    """An id whether Stripe returned it plain (``"pi_..."``) or expanded (an object with ``id``)."""
    if value is None or isinstance(value, str):
        return value
    ref = getattr(value, "id", None)
    return ref if isinstance(ref, str) else None


def to_provider_refund(refund: stripe.Refund) -> ProviderRefund:
    """Stripe's refund object as a :class:`ProviderRefund` (amounts in minor units, currency upper-cased)."""
    payment_ref = _reference(refund.payment_intent) or _reference(refund.charge)
    if payment_ref is None:
        raise ProviderInDoubt(f"Stripe refund {refund.id} names neither a payment intent nor a charge")
    try:
        amount = Money.from_minor(int(refund.amount), str(refund.currency).upper())
    except MoneyError as exc:
        raise ProviderInDoubt(f"Stripe refund {refund.id} is in a currency Mandate does not know: {exc}") from None
    status = _STATUSES.get(str(refund.status))
    if status is None:
        raise ProviderInDoubt(f"Stripe refund {refund.id} has an unknown status {refund.status!r}")
    metadata_object = refund.metadata
    metadata = {str(k): str(v) for k, v in (metadata_object.to_dict() if metadata_object else {}).items()}
    return ProviderRefund(
        id=refund.id,
        payment_ref=payment_ref,
        amount=amount,
        status=status,
        metadata=metadata,
        created=datetime.fromtimestamp(int(refund.created), UTC),
        charge_ref=_reference(refund.charge),
    )


class StripeProvider:
    """Refunds at Stripe (or localstripe) through one ``StripeClient``; see the module docstring."""

    name = "stripe"

    def __init__(self, *, api_key: str, api_base: str | None = None, timeout_seconds: float = 10.0) -> None:
        if not api_key:
            raise ProviderUnavailable("no Stripe API key is configured")
        self._key = api_key
        self._http = Httpx2StripeClient(timeout_seconds=timeout_seconds)
        self.api_base = api_base
        self.timeout_seconds = timeout_seconds
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=0,
            http_client=self._http,
        )

    @classmethod
    def from_settings(cls, settings: PaymentsSettings) -> StripeProvider:
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        return cls(api_key=key, api_base=settings.api_base, timeout_seconds=settings.timeout_seconds)

    def __repr__(self) -> str:  # the key is deliberately absent
        return f"StripeProvider(api_base={self.api_base or 'https://api.stripe.com'!r})"

    @property
    def is_test_mode(self) -> bool:
        return not is_live_key(self._key)

    def _error(self, error: stripe.StripeError) -> ProviderError:
        return classify(error, self._key)

    @staticmethod
    def _payment_params(payment_ref: str) -> dict[str, str]:
        if payment_ref.startswith("ch_"):
            return {"charge": payment_ref}
        if payment_ref.startswith("pi_"):
            return {"payment_intent": payment_ref}
        raise ProviderRefused("invalid_payment_ref", f"{payment_ref[:60]!r} is not a Stripe payment intent or charge")

    async def refund(
        self, *, payment_ref: str, amount: Money, idempotency_key: str, metadata: Mapping[str, str]
    ) -> ProviderRefund:
        if amount.minor <= 0:
            raise ProviderRefused("invalid_amount", "a refund must be more than zero")
        if not idempotency_key or len(idempotency_key) > 255:
            raise ProviderRefused("invalid_idempotency_key", "an idempotency key has 1 to 255 characters")
        params: dict[str, Any] = {
            **self._payment_params(payment_ref),
            "amount": amount.minor,
            "metadata": _check_metadata(metadata),
        }
        try:
            refund = await self._client.v1.refunds.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise self._error(exc) from None
        return to_provider_refund(refund)  # its amount is what Stripe holds; the caller records that, not the ask

    async def refunds_of(self, payment_ref: str) -> AsyncIterator[ProviderRefund]:
        async for refund in self._pages(self._payment_params(payment_ref)):
            yield refund

    async def find_refund(self, *, payment_ref: str, intent_id: str) -> ProviderRefund | None:
        found: ProviderRefund | None = None
        async for refund in self.refunds_of(payment_ref):
            if refund.metadata.get(META_INTENT) == intent_id and (found is None or refund.created <= found.created):
                found = refund  # the earliest; a duplicate beside it is for `mandate reconcile payments` to report
        return found

    async def refunds_since(self, since: datetime | None) -> AsyncIterator[ProviderRefund]:
        floor = int(since.timestamp()) if since is not None else None
        async for refund in self._pages({}):
            if floor is not None and refund.created.timestamp() < floor:
                return  # newest first: everything after this is older still
            yield refund

    async def _pages(self, filters: Mapping[str, str]) -> AsyncIterator[ProviderRefund]:
        after: str | None = None
        while True:
            params: dict[str, Any] = {**filters, "limit": PAGE_SIZE}
            if after is not None:
                params["starting_after"] = after
            try:
                page = await self._client.v1.refunds.list_async(params=params)  # type: ignore[arg-type]
            except stripe.StripeError as exc:
                raise self._error(exc) from None
            for refund in page.data:
                yield to_provider_refund(refund)
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    async def create_test_payment(
        self, *, amount: Money, customer_name: str, customer_email: str, description: str, metadata: Mapping[str, str]
    ) -> str:
        if not self.is_test_mode:
            raise ProviderUnavailable("test payments are never created with a live Stripe key")
        meta = _check_metadata(metadata)
        try:
            customer = await self._client.v1.customers.create_async(
                params={"name": customer_name, "email": customer_email, "description": description, "metadata": meta}
            )
            params: dict[str, Any] = {
                "amount": amount.minor,
                "currency": amount.currency.lower(),
                "customer": customer.id,
                "confirm": True,
                "metadata": meta,
            }
            if self._is_local:  # localstripe takes the test card itself, and no automatic payment methods
                card = await self._client.v1.payment_methods.create_async(
                    params={"type": "card", "card": _TEST_CARD}  # type: ignore[arg-type]
                )
                params["payment_method"] = card.id
            else:  # Stripe refuses raw card numbers: its test-mode token for the same card, no redirect methods
                params["payment_method"] = "pm_card_visa"
                params["automatic_payment_methods"] = {"enabled": True, "allow_redirects": "never"}
            intent = await self._client.v1.payment_intents.create_async(params=params)  # type: ignore[arg-type]
        except stripe.StripeError as exc:
            raise self._error(exc) from None
        if intent.status != "succeeded":
            raise ProviderRefused("payment_not_succeeded", f"test payment {intent.id} is {intent.status}")
        return intent.id

    @property
    def _is_local(self) -> bool:
        host = urlsplit(self.api_base).hostname if self.api_base else None
        return host in ("127.0.0.1", "localhost", "::1")

    async def aclose(self) -> None:
        await self._http.close_async()
