"""The provider call stays inside its intent's lease however long the call's transaction took, so a reconciler that
finds nothing once the lease has passed is right that nothing was done (docs/effects.md, "(b) The provider call").

Time is driven by a clock that moves on at every read, as on a server so loaded that time passes between any two
steps of a call; the provider is the TEST DOUBLE of test_protocol.py, so what was sent is counted exactly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from server.effects import intents, reconciler
from server.effects.models import COMPLETED, FAILED, Intent
from tests.conftest import Harness
from tests.effects import support
from tests.effects.doubles import DoublePayments

pytestmark = pytest.mark.anyio


def _stepping(harness: Harness, step: timedelta) -> None:
    """From now on, every read of the server's clock is ``step`` later than the one before."""
    base: Callable[[], datetime] = harness.mandate.enforcer.clock
    reads = [0]

    def clock() -> datetime:
        reads[0] += 1
        return base() + step * reads[0]

    harness.mandate.enforcer.clock = clock


def _lease(harness: Harness) -> timedelta:
    return timedelta(seconds=harness.mandate.settings.effects.lease_seconds)


async def _refund(harness: Harness) -> Any:
    async with harness.client("refunds") as client:
        return await client.call_tool("refund_create", support.REFUND)


async def test_the_lease_starts_when_the_intent_is_written_not_when_the_call_began(
    harness: Harness, double: DoublePayments
) -> None:
    step = _lease(harness) / 10
    _stepping(harness, step)
    result = await _refund(harness)
    assert not result.is_error, result.content
    [intent] = await support.intents(harness.mandate.db)
    assert intent.status == COMPLETED and double.calls == 1
    # created_at is the call's time; the lease was taken at least one clock read later, as the intent was written
    assert intent.lease_until - intent.created_at >= _lease(harness) + step


async def test_a_refund_whose_transaction_used_up_its_lease_is_never_sent_and_fails_at_once_released(
    harness: Harness, double: DoublePayments
) -> None:
    _stepping(harness, _lease(harness) * 0.9)  # by the time (a) has committed, under 20 % of the lease is left
    result = await _refund(harness)
    assert result.is_error
    body = result.structured_content
    assert body["code"] == "effect_not_made" and "not sent" in body["message"]
    assert double.calls == 0 and double.refunds == []
    db = harness.mandate.db
    [intent] = await support.intents(db)
    assert (intent.status, intent.error_code) == (FAILED, "effect_not_made")
    assert await support.spent(db) == 0
    assert (await support.order(db)).refunded_minor == 0
    assert [r.outcome for r in await support.records(db)] == ["started", "failed"]
    assert await reconciler.reconcile_due(harness.mandate.enforcer) == []  # nothing left in doubt


def _intent(created: datetime, lease_until: datetime) -> Intent:
    return support.started_intent(created, lease_until)


@pytest.mark.parametrize(
    ("elapsed", "left"),
    [(0.0, 48.0), (10.0, 38.0), (47.5, 0.5), (48.0, 0.0), (61.0, -13.0)],
)
def test_the_time_a_provider_call_may_take_is_what_its_lease_has_left_less_the_settling_fifth(
    elapsed: float, left: float
) -> None:
    written = datetime.fromisoformat("2026-12-03T12:00:00+00:00")
    intent = _intent(written, written + timedelta(seconds=60))
    assert intents.call_seconds_left(intent, written + timedelta(seconds=elapsed), 60.0) == pytest.approx(left)
