"""The payments provider interface: what the effects protocol asks of a provider, and how a provider answers.

A provider call has three kinds of outcome, and the protocol (docs/effects.md) treats each differently:

- a :class:`ProviderRefund`: the provider did it, and here is its object;
- :class:`ProviderRefused`: the provider definitely said no (an HTTP 4xx other than 409 and 429) and nothing
  happened there; the reservation can be released and the refusal recorded;
- :class:`ProviderInDoubt`: a timeout, a broken connection, a 5xx, a 409 (an idempotency conflict) or a 429; the
  refund may or may not exist. Only the reconciler may resolve it, by asking again
  (:meth:`PaymentProvider.find_refund`).

Every refund Mandate makes carries metadata naming what made it (:data:`META_INTENT`, :data:`META_AUDIT`,
:data:`META_TOOL`), so it can be found again even at a provider that ignores idempotency keys (localstripe does).

Money is :class:`scopes.money.Money`; a provider converts to its own representation (Stripe: integer minor units
and a lowercase currency code). Times are timezone-aware UTC.

Beyond the interface agreed with the effects protocol, providers offer :meth:`PaymentProvider.refunds_of` (every
refund of one payment, for ``mandate reconcile payments``) and :meth:`PaymentProvider.create_test_payment` (a paid
test-mode payment, for seeding the demo store); both are named here so a second provider knows what to implement.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from scopes.money import Money

if TYPE_CHECKING:
    from server.config import PaymentsSettings, Settings

META_INTENT = "mandate_intent"
"""Metadata key: the effect intent a refund carries out (how the reconciler finds it again)."""
META_AUDIT = "mandate_audit"
"""Metadata key: the audit record of the invocation that asked for the refund."""
META_TOOL = "mandate_tool"
"""Metadata key: the tool that asked for it (``refund_create``)."""

RefundStatus = Literal["succeeded", "pending", "failed", "canceled"]
REFUND_STATUSES: tuple[RefundStatus, ...] = ("succeeded", "pending", "failed", "canceled")


@dataclass(frozen=True)
class ProviderRefund:
    """A refund as the provider holds it.

    ``payment_ref`` is the payment it refunds (a Stripe payment intent ``pi_...``, or a charge ``ch_...`` for a
    refund made against a charge directly). ``status`` is one of :data:`REFUND_STATUSES`: Stripe's
    ``requires_action`` counts as ``pending`` (the money has not moved yet).
    """

    id: str
    payment_ref: str
    amount: Money
    status: RefundStatus
    metadata: Mapping[str, str]
    created: datetime
    charge_ref: str | None = field(default=None, compare=False)
    """The charge the refund moved money back from, when the provider says (Stripe's ``charge``)."""

    @property
    def intent_id(self) -> str | None:
        return self.metadata.get(META_INTENT)

    @property
    def audit_id(self) -> str | None:
        return self.metadata.get(META_AUDIT)


class ProviderError(Exception):
    """Base of what a provider call raises instead of answering; never carries a credential."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProviderRefused(ProviderError):
    """The provider definitely refused (HTTP 4xx other than 409 and 429): nothing happened there.

    ``code`` is the provider's machine-readable reason (Stripe's error ``code``, such as
    ``charge_already_refunded``, or ``provider_refused`` when it gave none); ``message`` is its explanation, scrubbed
    of anything that looks like a key. ``http_status`` is the status it answered with.
    """

    def __init__(self, code: str, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ProviderInDoubt(ProviderError):
    """The call may or may not have happened at the provider (timeout, connection error, 5xx, 409, 429).

    The caller must not assume either outcome: the effect stays in doubt until the provider is asked again.
    """


class ProviderUnavailable(ProviderError):
    """The provider cannot be used for this (no key, a live key for a test-only operation); nothing was sent."""


@runtime_checkable
class PaymentProvider(Protocol):
    """A payments provider as the effects protocol and the reconcilers see it.

    Every method either answers, or raises :class:`ProviderRefused` (definite no) or :class:`ProviderInDoubt`
    (unknown). No method retries: retrying is the protocol's decision (docs/effects.md).
    """

    name: str

    async def refund(
        self, *, payment_ref: str, amount: Money, idempotency_key: str, metadata: Mapping[str, str]
    ) -> ProviderRefund:
        """Refund ``amount`` of the payment, sending ``idempotency_key`` and ``metadata`` with the request.

        The provider may ignore the key (localstripe does); ``metadata[META_INTENT]`` is what finds it again.
        """
        ...

    async def find_refund(self, *, payment_ref: str, intent_id: str) -> ProviderRefund | None:
        """The refund of this payment whose metadata names ``intent_id``, or ``None`` when there is none.

        Pages through every refund of the payment. When several carry the intent (a duplicate: a provider that
        ignored the idempotency key), the earliest is returned. Raises :class:`ProviderRefused` when the payment
        itself is unknown to the provider, :class:`ProviderInDoubt` when the provider could not be asked.
        """
        ...

    def refunds_since(self, since: datetime | None) -> AsyncIterator[ProviderRefund]:
        """Every refund created at or after ``since`` (all of them for ``None``), newest first.

        An async generator: ``async for refund in provider.refunds_since(t)``. Stripe's timestamps are whole
        seconds, so ``since`` is compared to the second.
        """
        ...

    def refunds_of(self, payment_ref: str) -> AsyncIterator[ProviderRefund]:
        """Every refund of one payment, newest first (an async generator)."""
        ...

    async def create_test_payment(
        self, *, amount: Money, customer_name: str, customer_email: str, description: str, metadata: Mapping[str, str]
    ) -> str:
        """Create a customer and a confirmed, paid payment in test mode; return the payment's reference.

        For seeding development data only: raises :class:`ProviderUnavailable` with a live key.
        """
        ...

    async def aclose(self) -> None:
        """Release the HTTP connections."""
        ...


def open_provider(settings: Settings | PaymentsSettings) -> PaymentProvider | None:
    """The configured payments provider, or ``None`` when none is configured (``[payments]`` unset)."""
    from server.config import Settings

    payments = settings.payments if isinstance(settings, Settings) else settings
    if payments.provider is None:
        return None
    if payments.provider == "stripe":
        from server.providers.stripe import StripeProvider

        return StripeProvider.from_settings(payments)
    raise ProviderUnavailable(f"unknown payments provider {payments.provider!r}")  # pragma: no cover - Literal
