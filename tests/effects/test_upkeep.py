"""The reconciler's upkeep loop: a backlog of intents in doubt drains in back-to-back rounds, then the loop waits
its interval; a provider still unreachable is not asked about batch after batch at once. The loop's waits are
recorded by the sleep it is given, so nothing here waits on a clock. A round looks its intents up several at a
time, and one intent that fails does not stop the others."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest

from server.effects import intents, reconciler
from server.effects.models import COMPLETED, STARTED
from tests.conftest import Harness
from tests.effects import support
from tests.effects.doubles import DoublePayments

pytestmark = pytest.mark.anyio

BATCH = 2


class Stopped(Exception):
    """Ends the loop at its first real wait."""


def _waits() -> tuple[list[float], Callable[[float], Awaitable[None]]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if seconds > 0:
            raise Stopped

    return waits, sleep


async def _in_doubt(harness: Harness, double: DoublePayments, count: int) -> None:
    double.doubt_after = True  # each refund is made, and its answer lost
    async with harness.client("refunds") as client:
        for _ in range(count):
            result = await client.call_tool("refund_create", {**support.REFUND, "amount": "1.00"})
            assert result.structured_content["code"] == "effect_in_doubt"
    core = harness.mandate.enforcer
    core.effects = core.effects.model_copy(update={"reconcile_batch": BATCH})
    clock = core.clock
    core.clock = lambda: clock() + timedelta(seconds=core.effects.lease_seconds + 1)


async def test_a_backlog_drains_in_back_to_back_rounds_then_the_loop_waits_its_interval(
    harness: Harness, double: DoublePayments
) -> None:
    await _in_doubt(harness, double, 5)
    waits, sleep = _waits()
    with pytest.raises(Stopped):
        await reconciler.reconcile_forever(harness.mandate.enforcer, sleep=sleep)
    interval = harness.mandate.enforcer.effects.reconcile_interval_seconds
    assert waits == [0.0, 0.0, interval]  # rounds of 2, 2 and 1: the short one ends the drain
    assert [intent.status for intent in await support.intents(harness.mandate.db)] == [COMPLETED] * 5
    assert double.calls == 5  # each refund asked for once; the lookups found them


async def test_a_full_batch_that_resolves_nothing_waits_the_interval(harness: Harness, double: DoublePayments) -> None:
    await _in_doubt(harness, double, 3)
    double.lookups_fail = True  # the provider is still unreachable
    waits, sleep = _waits()
    with pytest.raises(Stopped):
        await reconciler.reconcile_forever(harness.mandate.enforcer, sleep=sleep)
    assert waits == [harness.mandate.enforcer.effects.reconcile_interval_seconds]
    assert [intent.status for intent in await support.intents(harness.mandate.db)] == [STARTED] * 3


def test_the_pause_is_none_only_after_a_full_batch_that_resolved_something() -> None:
    def resolution(status: str) -> reconciler.Resolution:
        return reconciler.Resolution("int_1", "refund_create", status)

    assert reconciler.pause_after([resolution("completed"), resolution("in_doubt")], 2, 5.0) == 0.0
    assert reconciler.pause_after([resolution("failed")], 2, 5.0) == 5.0
    assert reconciler.pause_after([resolution("in_doubt")] * 2, 2, 5.0) == 5.0
    assert reconciler.pause_after([], 2, 5.0) == 5.0


async def test_a_round_that_fails_is_logged_and_the_loop_waits_its_interval(
    harness: Harness, double: DoublePayments, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(_core: object) -> list[reconciler.Resolution]:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(reconciler, "reconcile_due", broken)
    waits, sleep = _waits()
    with pytest.raises(Stopped):
        await reconciler.reconcile_forever(harness.mandate.enforcer, sleep=sleep)
    assert waits == [harness.mandate.enforcer.effects.reconcile_interval_seconds]
    assert "a round of the effects reconciler failed" in caplog.text


async def test_a_round_looks_its_intents_up_several_at_a_time_and_answers_in_their_order(
    harness: Harness, double: DoublePayments
) -> None:
    await _in_doubt(harness, double, 6)
    core = harness.mandate.enforcer
    core.effects = core.effects.model_copy(update={"reconcile_batch": 6, "reconcile_concurrency": 4})
    together = anyio.Event()
    double.lookups_hold, double.lookups_gathered = anyio.Event(), (4, together)
    taken: list[reconciler.Resolution] = []

    async def round_() -> None:
        taken.extend(await reconciler.reconcile_due(core))

    with anyio.fail_after(60):  # a round resolving one by one never has four lookups in flight
        async with anyio.create_task_group() as group:
            group.start_soon(round_)
            await together.wait()
            assert double.lookups_in_flight == 4  # no more than the setting allows
            double.lookups_hold.set()
    assert double.lookups_together == 4
    intents = await support.intents(harness.mandate.db)
    assert [intent.status for intent in intents] == [COMPLETED] * 6
    assert sorted(r.intent_id for r in taken) == sorted(intent.id for intent in intents)
    assert [r.status for r in taken] == [COMPLETED] * 6


async def test_an_intent_that_cannot_be_reconciled_leaves_the_others_of_its_round_resolved(
    harness: Harness, double: DoublePayments, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _in_doubt(harness, double, 3)
    core = harness.mandate.enforcer
    core.effects = core.effects.model_copy(update={"reconcile_batch": 3})
    [first, *_] = await support.intents(harness.mandate.db)
    real = reconciler.resolve

    async def resolve(core: object, intent: Any) -> reconciler.Resolution:
        if intent.id == first.id:
            raise ValueError("its plan no longer parses")
        return await real(core, intent)  # type: ignore[arg-type]

    monkeypatch.setattr(reconciler, "resolve", resolve)
    taken = await reconciler.reconcile_due(core)
    assert {r.intent_id: r.status for r in taken}[first.id] == "in_doubt"
    assert sorted(r.status for r in taken) == [COMPLETED, COMPLETED, "in_doubt"]
    by_id = {intent.id: intent.status for intent in await support.intents(harness.mandate.db)}
    assert by_id[first.id] == STARTED and sorted(by_id.values()) == [COMPLETED, COMPLETED, STARTED]
    [kept] = [intent for intent in await support.intents(harness.mandate.db) if intent.id == first.id]
    assert "its plan no longer parses" in (kept.last_error or "")  # why it is still in doubt, for the operator


async def test_a_round_renews_a_claim_it_reaches_late_and_leaves_one_another_reconciler_took_meanwhile(
    harness: Harness, double: DoublePayments
) -> None:
    await _in_doubt(harness, double, 3)
    core = harness.mandate.enforcer
    core.effects = core.effects.model_copy(update={"reconcile_batch": 3, "reconcile_concurrency": 1})
    lease = timedelta(seconds=core.effects.lease_seconds)
    start = core.clock()
    moved = timedelta(0)
    core.clock = lambda: start + moved
    other: list[Any] = []

    async def slow_lookup(count: int) -> None:  # each lookup takes 0.6 of a lease
        nonlocal moved
        moved += lease * 0.6
        if count == 2:  # by now the third intent's claim has run out: another replica's round takes it up
            other.extend(await intents.claim_due(harness.mandate.db, core.clock(), lease=lease, limit=10))

    double.after_lookup = slow_lookup
    taken = await reconciler.reconcile_due(core)

    first, second = double.looked_up
    [third] = other  # the second intent's claim was renewed when the round reached it, so only the third was due
    assert third.id not in double.looked_up
    assert {r.intent_id: (r.status, r.detail) for r in taken} == {
        first: (COMPLETED, ""),
        second: (COMPLETED, ""),
        third.id: ("in_doubt", reconciler.TAKEN_ELSEWHERE),
    }
    by_id = {intent.id: intent for intent in await support.intents(harness.mandate.db)}
    assert (by_id[third.id].status, by_id[third.id].reconcile_token) == (STARTED, third.reconcile_token)
    assert len(double.refunds) == 3 and double.calls == 3  # nothing was sent again
