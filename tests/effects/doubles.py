"""TEST DOUBLE of a payments provider, for fast unit tests of the intent protocol's state machine only.

It implements the methods of ``server.providers.payments.PaymentProvider`` that the protocol uses (``refund``,
``find_refund``), keeping refunds in memory, and can be told to refuse, to fail in doubt (before or after making
the refund), to be unreachable for lookups, or to wait on an event. The end-to-end and crash tests in this folder
use the real Stripe adapter against a real localstripe instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio

from scopes.money import Money
from server.toolkit import EffectRefused


class DoubleInDoubt(ConnectionError):
    """Like a timeout or a dropped connection: the caller cannot know whether the refund was made."""


@dataclass(frozen=True)
class DoubleRefund:
    id: str
    payment_ref: str
    amount: Money
    status: str
    metadata: Mapping[str, str]
    created: datetime


@dataclass
class DoublePayments:
    name: str = "double"
    refunds: list[DoubleRefund] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    refuse: tuple[str, str] | None = None
    doubt_before: bool = False
    """Raise in doubt without making the refund (the request never reached the provider)."""
    doubt_after: bool = False
    """Make the refund, then raise in doubt (the answer was lost)."""
    lookups_fail: bool = False
    status: str = "succeeded"
    hold: anyio.Event | None = None
    entered: anyio.Event | None = None
    """Set when a refund call has arrived (before it waits on ``hold``)."""
    lookups_hold: anyio.Event | None = None
    """Lookups wait on it (after counting themselves in flight)."""
    lookups_in_flight: int = 0
    lookups_together: int = 0
    """The most lookups that were in flight at once."""
    lookups_gathered: tuple[int, anyio.Event] | None = None
    """Set the event once that many lookups are in flight at once."""
    looked_up: list[str] = field(default_factory=list)
    """The intents looked up, in order."""
    after_lookup: Callable[[int], Awaitable[None]] | None = None
    """Awaited after each lookup, with how many there have been (a lookup that takes time, for example)."""
    calls: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def refund(
        self, *, payment_ref: str, amount: Money, idempotency_key: str, metadata: Mapping[str, str]
    ) -> DoubleRefund:
        self.calls += 1
        self.keys.append(idempotency_key)
        if self.entered is not None:
            self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.refuse is not None:
            raise EffectRefused(*self.refuse)
        if self.doubt_before:
            raise DoubleInDoubt("the connection was reset before the request was sent")
        made = DoubleRefund(
            f"re_double{next(self._ids)}", payment_ref, amount, self.status, dict(metadata), datetime.now(UTC)
        )
        self.refunds.append(made)
        if self.doubt_after:
            raise DoubleInDoubt("the provider did not answer in time")
        return made

    async def find_refund(self, *, payment_ref: str, intent_id: str) -> DoubleRefund | None:
        self.lookups_in_flight += 1
        self.lookups_together = max(self.lookups_together, self.lookups_in_flight)
        if self.lookups_gathered is not None and self.lookups_in_flight >= self.lookups_gathered[0]:
            self.lookups_gathered[1].set()
        try:
            if self.lookups_hold is not None:
                await self.lookups_hold.wait()
            self.looked_up.append(intent_id)
            found = self._lookup(payment_ref, intent_id)
            if self.after_lookup is not None:
                await self.after_lookup(len(self.looked_up))
            return found
        finally:
            self.lookups_in_flight -= 1

    def _lookup(self, payment_ref: str, intent_id: str) -> DoubleRefund | None:
        if self.lookups_fail:
            raise DoubleInDoubt("the provider cannot be reached")
        for made in self.refunds:
            if made.payment_ref == payment_ref and made.metadata.get("mandate_intent") == intent_id:
                return made
        return None

    async def aclose(self) -> None:
        return None
