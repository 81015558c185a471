"""The intent protocol's state machine, through MCP clients, against a TEST DOUBLE provider (tests/effects/doubles.py)
so each case is fast; the same paths against the real Stripe adapter and localstripe are in test_localstripe.py.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import anyio
import pytest

from server.effects import reconciler
from server.effects.models import COMPLETED, CONFLICT, FAILED, STARTED
from tests.conftest import Harness
from tests.effects import support
from tests.effects.doubles import DoublePayments

pytestmark = pytest.mark.anyio


async def _refund(harness: Harness, arguments: dict[str, Any] | None = None, agent: str = "refunds") -> Any:
    async with harness.client(agent) as client:
        return await client.call_tool("refund_create", arguments or support.REFUND)


def _later(harness: Harness, seconds: float) -> None:
    """Move the server's clock past leases (the reconciler reads the same clock)."""
    clock = harness.mandate.enforcer.clock
    harness.mandate.enforcer.clock = lambda: clock() + timedelta(seconds=seconds)


async def test_a_refund_through_the_provider_names_its_refund_and_links_intent_and_outcome(
    harness: Harness, double: DoublePayments
) -> None:
    result = await _refund(harness)
    assert not result.is_error, result.content
    body = result.structured_content
    [made] = double.refunds
    assert (body["provider_refund_id"], body["provider_status"], body["amount"]) == (made.id, "succeeded", "12.50")
    assert result.meta["io.mandate/effect"]["object_id"] == made.id

    db = harness.mandate.db
    [intent] = await support.intents(db)
    assert (intent.status, intent.provider_object_id, intent.amount_minor) == (COMPLETED, made.id, 1250)
    assert made.metadata == {
        "mandate_intent": intent.id,
        "mandate_audit": intent.audit_id,
        "mandate_tool": "refund_create",
    }
    assert double.keys == [f"mandate-{intent.audit_id}"]
    [refund] = await support.refunds(db)
    assert (refund.provider_refund_id, refund.audit_id) == (made.id, intent.audit_id)
    assert (await support.order(db)).refunded_minor == 1250
    assert await support.spent(db) == 1250
    assert await support.customer_window(db) == 1250

    started, outcome = await support.records(db)
    assert (started.id, started.decision, started.outcome) == (intent.audit_id, "allow", "started")
    assert (outcome.kind, outcome.outcome, outcome.id) == ("effect", "succeeded", intent.outcome_audit_id)
    summary = json.loads(outcome.result_summary)
    assert (summary["intent_id"], summary["intent_audit_id"], summary["provider_object_id"]) == (
        intent.id,
        intent.audit_id,
        made.id,
    )
    assert "arrived damaged" not in outcome.arguments  # the reason stays redacted in the outcome's record too


async def test_a_provider_refusal_names_its_reason_and_leaves_no_reservation(
    harness: Harness, double: DoublePayments
) -> None:
    double.refuse = ("charge_already_refunded", "This charge has already been refunded.")
    result = await _refund(harness)
    assert result.is_error
    body = result.structured_content
    assert body["code"] == "provider_refused" and body["details"]["provider_code"] == "charge_already_refunded"
    assert "This charge has already been refunded." in body["message"]

    db = harness.mandate.db
    [intent] = await support.intents(db)
    assert (intent.status, intent.error_code) == (FAILED, "charge_already_refunded")
    assert await support.spent(db) == 0
    assert await support.customer_window(db) == 0  # the customer's 30-day budget gets it back too
    assert (await support.order(db)).refunded_minor == 0
    assert await support.refunds(db) == []
    started, failed = await support.records(db)
    assert (started.outcome, failed.outcome, failed.reason_code) == ("started", "failed", "provider_refused")


async def test_a_lost_answer_is_in_doubt_and_the_reconciler_completes_it_exactly_once(
    harness: Harness, double: DoublePayments
) -> None:
    double.doubt_after = True
    result = await _refund(harness)
    assert result.is_error and result.structured_content["code"] == "effect_in_doubt"
    assert result.structured_content["details"]["retryable"] is True
    db = harness.mandate.db
    [intent] = await support.intents(db)
    assert intent.status == STARTED and "did not answer" in (intent.last_error or "")
    assert await support.spent(db) == 1250  # an amount in doubt is never given back

    assert await reconciler.reconcile_due(harness.mandate.enforcer) == []  # still within its lease
    _later(harness, harness.mandate.settings.effects.lease_seconds + 1)
    [resolution] = await reconciler.reconcile_due(harness.mandate.enforcer)
    assert (resolution.status, resolution.object_id) == (COMPLETED, double.refunds[0].id)
    assert await reconciler.reconcile_due(harness.mandate.enforcer) == []

    assert len(double.refunds) == 1 and double.calls == 1
    [refund] = await support.refunds(db)
    assert refund.provider_refund_id == double.refunds[0].id
    assert await support.spent(db) == 1250
    started, succeeded = await support.records(db)
    assert (started.outcome, succeeded.outcome, succeeded.transport) == ("started", "succeeded", "reconciler")
    assert succeeded.subject == started.subject == "agent:refunds"  # recorded as the requester's action


async def test_a_request_that_never_reached_the_provider_fails_after_its_lease_and_is_released(
    harness: Harness, double: DoublePayments
) -> None:
    double.doubt_before = True
    result = await _refund(harness)
    assert result.structured_content["code"] == "effect_in_doubt"
    db = harness.mandate.db
    assert (await support.order(db)).refunded_minor == 1250  # held while in doubt

    _later(harness, harness.mandate.settings.effects.lease_seconds + 1)
    [resolution] = await reconciler.reconcile_due(harness.mandate.enforcer)
    assert (resolution.status, resolution.detail) == (FAILED, "effect_not_made")
    assert await support.spent(db) == 0
    assert await support.customer_window(db) == 0
    assert (await support.order(db)).refunded_minor == 0
    assert double.refunds == []
    assert [r.outcome for r in await support.records(db)] == ["started", "failed"]


async def test_a_refund_the_provider_makes_after_its_intent_failed_is_a_conflict_and_the_failure_stands(
    harness: Harness, double: DoublePayments
) -> None:
    double.hold, double.entered = anyio.Event(), anyio.Event()
    answers: list[Any] = []

    async def refund() -> None:
        answers.append(await _refund(harness))

    async with anyio.create_task_group() as group:
        group.start_soon(refund)
        await double.entered.wait()  # the request is at the provider, which has not acted yet
        _later(harness, harness.mandate.settings.effects.lease_seconds + 1)
        [resolution] = await reconciler.reconcile_due(harness.mandate.enforcer)
        assert (resolution.status, resolution.detail) == (FAILED, "effect_not_made")
        double.hold.set()  # now the provider makes the refund after all
    [answer] = answers
    assert answer.is_error and answer.structured_content["code"] == "effect_not_made"  # the winner's answer

    db = harness.mandate.db
    [made] = double.refunds
    [intent] = await support.intents(db)
    assert (intent.status, intent.provider_object_id, intent.amount_minor) == (CONFLICT, made.id, 1250)
    assert (intent.error_code, intent.resolved_by) == ("effect_not_made", "reconciler")  # the failure is kept
    assert json.loads(intent.answer or "{}")["structuredContent"]["code"] == "effect_not_made"
    assert await support.spent(db) == 0  # released by the failure, not taken again
    assert await support.refunds(db) == []  # no local refund row for an object a person must reconcile
    started, failed, conflict = await support.records(db)
    assert (started.outcome, failed.outcome, conflict.outcome) == ("started", "failed", "conflict")
    assert (conflict.decision, conflict.reason_code, conflict.kind) == ("error", "effect_conflict", "effect")
    summary = json.loads(conflict.result_summary)
    assert (summary["failed_by"], summary["provider_object_id"]) == (failed.id, made.id)


async def test_an_unreachable_provider_leaves_the_intent_in_doubt_and_the_budget_held(
    harness: Harness, double: DoublePayments
) -> None:
    double.doubt_after = True
    await _refund(harness)
    double.lookups_fail = True
    _later(harness, harness.mandate.settings.effects.lease_seconds + 1)
    [resolution] = await reconciler.reconcile_due(harness.mandate.enforcer)
    assert resolution.status == "in_doubt" and "cannot be reached" in resolution.detail
    db = harness.mandate.db
    [intent] = await support.intents(db)
    assert (intent.status, intent.attempts) == (STARTED, 1)
    assert await support.spent(db) == 1250

    double.lookups_fail = False
    _later(harness, harness.mandate.settings.effects.lease_seconds + 1)
    [resolution] = await reconciler.reconcile_due(harness.mandate.enforcer)
    assert resolution.status == COMPLETED


async def test_a_keyed_retry_while_in_doubt_is_told_to_wait_then_gets_the_final_answer(
    harness: Harness, double: DoublePayments
) -> None:
    keyed = {**support.REFUND, "idempotency_key": "refund-ord-5001-a"}
    double.doubt_after = True
    first = await _refund(harness, keyed)
    assert first.structured_content["code"] == "effect_in_doubt"

    retry = await _refund(harness, keyed)
    assert retry.is_error and retry.structured_content["code"] == "effect_in_doubt"
    assert retry.structured_content["details"]["retry_after_seconds"] >= 1
    assert double.calls == 1  # the retry met the intent: no second request to the provider

    _later(harness, harness.mandate.settings.effects.lease_seconds + 1)
    await reconciler.reconcile_due(harness.mandate.enforcer)
    final = await _refund(harness, keyed)
    assert not final.is_error, final.content
    assert final.structured_content["provider_refund_id"] == double.refunds[0].id
    assert final.meta["io.mandate/idempotency"]["replayed"] is True
    assert double.calls == 1 and len(double.refunds) == 1


async def test_an_approved_provider_refund_runs_after_the_decision_commits_and_the_approval_shows_it(
    harness: Harness, double: DoublePayments
) -> None:
    big = {"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": "monitor arrived broken"}
    pending = await _refund(harness, big)
    assert pending.structured_content["status"] == "pending_approval", pending.content
    approval_id = pending.structured_content["approval_id"]
    assert double.calls == 0

    async with harness.client("supervisor") as client:
        decided = await client.call_tool(
            "approval_decide", {"approval_id": approval_id, "decision": "approve", "comment": "ok"}
        )
    assert not decided.is_error, decided.content
    [made] = double.refunds
    async with harness.client("refunds") as client:
        status = await client.call_tool("approval_status", {"approval_id": approval_id})
    body = status.structured_content
    assert body["status"] == "executed", body
    assert body["outcome"]["result"]["provider_refund_id"] == made.id
    [intent] = await support.intents(harness.mandate.db)
    assert (intent.status, intent.approval_id) == (COMPLETED, approval_id)
    records = await support.records(harness.mandate.db)
    assert [r.outcome for r in records] == ["pending_approval", "started", "succeeded"]
    assert {r.approval_id for r in records} == {approval_id}


async def test_an_approved_refund_the_provider_refuses_ends_failed_with_the_reason(
    harness: Harness, double: DoublePayments
) -> None:
    big = {"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": "monitor arrived broken"}
    approval_id = (await _refund(harness, big)).structured_content["approval_id"]
    double.refuse = ("amount_too_large", "Refund amount is greater than the unrefunded amount.")
    async with harness.client("supervisor") as client:
        await client.call_tool("approval_decide", {"approval_id": approval_id, "decision": "approve"})
    async with harness.client("refunds") as client:
        status = await client.call_tool("approval_status", {"approval_id": approval_id})
    body = status.structured_content
    assert body["status"] == "failed", body
    assert "greater than the unrefunded amount" in json.dumps(body)
    assert await support.spent(harness.mandate.db) == 0


async def test_without_a_provider_the_refund_stays_a_row_of_the_demo_store(harness: Harness) -> None:
    result = await _refund(harness)
    assert not result.is_error
    assert result.structured_content["provider_refund_id"] is None
    assert await support.intents(harness.mandate.db) == []
