"""Two reconcilers (two Mandate instances on one database, as two replicas) drain one backlog of intents in doubt at
once, each resolving four at a time: every intent is resolved exactly once, and the ledger, its rolling
sub-totals, the orders and the audit trail agree afterwards. Against the TEST DOUBLE provider
(tests/effects/doubles.py), which both replicas share as they would share the real one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sqlalchemy import func, select

from server import ledger
from server.app import open_mandate
from server.effects import reconciler
from server.effects.models import COMPLETED, FAILED, STARTED
from tests.conftest import Harness
from tests.effects import support
from tests.effects.doubles import DoublePayments

pytestmark = pytest.mark.anyio

ORDERS = ("ord_5001", "ord_5002", "ord_5003")


async def _slots_and_entries(db: Any) -> tuple[int, int]:
    async with db.engine.connect() as connection:
        slots = (
            await connection.execute(
                select(func.coalesce(func.sum(ledger.WINDOW_TOTALS.c.spent), 0)).where(
                    ledger.WINDOW_TOTALS.c.slot.like("d%")
                )
            )
        ).scalar()
        entries = (
            await connection.execute(
                select(func.coalesce(func.sum(ledger.ENTRIES.c.amount), 0)).where(ledger.ENTRIES.c.period == "rolling")
            )
        ).scalar()
    return int(slots), int(entries)


async def test_two_replicas_reconciling_one_backlog_four_at_a_time_resolve_each_intent_exactly_once(
    harness: Harness, double: DoublePayments
) -> None:
    count = 48
    async with harness.client("refunds") as client:
        for index in range(count):
            double.doubt_after, double.doubt_before = index % 2 == 0, index % 2 == 1
            arguments = {**support.REFUND, "order_id": ORDERS[index % 3], "amount": "1.00"}
            result = await client.call_tool("refund_create", arguments)
            assert result.structured_content["code"] == "effect_in_doubt", result.structured_content
    made = len(double.refunds)
    assert made == count // 2

    first = harness.mandate.enforcer
    other_mandate = await open_mandate(harness.mandate.settings, local_dev_jwks=True)
    try:
        second = other_mandate.enforcer
        second.providers["payments"] = double
        for core in (first, second):
            core.effects = core.effects.model_copy(update={"reconcile_batch": 7, "reconcile_concurrency": 4})
            clock = core.clock
            core.clock = lambda clock=clock, core=core: clock() + timedelta(seconds=core.effects.lease_seconds + 1)

        async def drain(core: Any) -> None:
            for _ in range(20):
                await reconciler.reconcile_due(core)
                await anyio.lowlevel.checkpoint()

        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                group.start_soon(drain, first)
                group.start_soon(drain, second)
    finally:
        await other_mandate.aclose()

    db = harness.mandate.db
    rows = await support.intents(db)
    assert sorted(intent.status for intent in rows) == [COMPLETED] * made + [FAILED] * (count - made)
    effects = [record for record in await support.records(db) if record.kind == "effect"]
    assert len(effects) == count  # one outcome record per intent
    refunds = await support.refunds(db)
    assert len(refunds) == made and len({refund.provider_refund_id for refund in refunds}) == made
    assert await support.spent(db) == made * 100
    assert await support.customer_window(db) == made * 100
    slots, entries = await _slots_and_entries(db)
    assert slots == entries == made * 100
    total = 0
    for order_id in ORDERS:
        total += (await support.order(db, order_id)).refunded_minor
    assert total == made * 100
    assert not [intent for intent in rows if intent.status == STARTED]
