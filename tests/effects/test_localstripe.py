"""refund_create through the real Stripe adapter (the official ``stripe`` SDK) against a real localstripe: one
refund at the provider carrying the intent in its metadata, and a 4xx that becomes a clear tool error with nothing
left reserved."""

from __future__ import annotations

import pytest

# The real Stripe adapter and the localstripe fixtures come with the payments provider (server/providers/).
pytest.importorskip("server.providers.localstripe", reason="the payments provider (server/providers) is not installed")

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio
import stripe

from scopes.money import Money
from server.app import open_mandate
from server.audit.checkpoint import load_or_create_signing_key
from server.audit.receipt import RECEIPT_META, check_receipt
from server.config import Settings
from server.effects.models import COMPLETED, FAILED
from tests.conftest import Harness
from tests.effects import support
from tools.store.seed import seed_demo_store

pytestmark = pytest.mark.anyio


@pytest.fixture
async def stripe_harness(provider_settings: Settings) -> AsyncIterator[Harness]:
    mandate = await open_mandate(provider_settings, local_dev_jwks=True)
    try:
        assert "payments" in mandate.enforcer.providers
        await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, datetime.now(UTC)))
        payment = await mandate.enforcer.providers["payments"].create_test_payment(
            amount=Money.parse("158.00", "EUR"),
            customer_name="Ada Lovelace",
            customer_email="ada@example.com",
            description="order ord_5001",
            metadata={"order_id": "ord_5001"},
        )
        await support.link_orders(mandate.db, {"ord_5001": payment})
        yield Harness(mandate)
    finally:
        await mandate.aclose()


async def test_a_refund_at_localstripe_is_made_once_and_names_the_intent_in_its_metadata(
    stripe_harness: Harness, stripe_outside: stripe.StripeClient
) -> None:
    async with stripe_harness.client("refunds") as client:
        result = await client.call_tool("refund_create", support.REFUND)
    assert not result.is_error, result.content
    db = stripe_harness.mandate.db
    order = await support.order(db)
    listed = await anyio.to_thread.run_sync(
        lambda: stripe_outside.v1.refunds.list(params={"payment_intent": order.payment_ref}).data
    )
    [made] = listed
    [intent] = await support.intents(db)
    assert result.structured_content["provider_refund_id"] == made.id == intent.provider_object_id
    assert (made.amount, made.currency, intent.status) == (1250, "eur", COMPLETED)
    assert made.metadata.to_dict() == {
        "mandate_intent": intent.id,
        "mandate_audit": intent.audit_id,
        "mandate_tool": "refund_create",
    }
    assert await support.spent(db) == 1250


async def test_a_4xx_from_the_provider_is_a_clear_tool_error_with_no_reservation_left(stripe_harness: Harness) -> None:
    db = stripe_harness.mandate.db
    await support.link_orders(db, {"ord_5001": "pi_this_payment_does_not_exist"})
    async with stripe_harness.client("refunds") as client:
        result = await client.call_tool("refund_create", support.REFUND)
    assert result.is_error
    body = result.structured_content
    assert body["code"] == "provider_refused" and body["details"]["provider_code"], body
    assert "refused" in body["message"] and "nothing was spent" in body["message"]
    assert "sk_test" not in result.model_dump_json()  # the provider key never reaches an answer
    [intent] = await support.intents(db)
    assert intent.status == FAILED
    assert (await support.spent(db), (await support.order(db)).refunded_minor) == (0, 0)
    started, failed = await support.records(db)
    assert (started.outcome, failed.outcome, failed.reason_code) == ("started", "failed", "provider_refused")
    assert "sk_test" not in (failed.reason or "")


async def test_a_refund_at_localstripe_answers_a_receipt_handle_for_its_outcome_record_that_redeems_once_integrated(
    stripe_harness: Harness, provider_settings: Settings
) -> None:
    scopes = ("customers:read", "orders:read", "refunds:create", "audit:read")
    async with stripe_harness.mandate.upkeep(), stripe_harness.client("refunds", scopes=scopes) as client:
        result = await client.call_tool("refund_create", support.REFUND)
        assert not result.is_error, result.content
        handle = (result.meta or {})[RECEIPT_META]
        with anyio.fail_after(60):  # the sequencer integrates within its interval (0.5 s by default)
            while (answer := await client.call_tool("audit_receipt", handle)).is_error:
                assert (answer.structured_content or {}).get("code") == "not_yet_integrated", answer.content
                await anyio.sleep(0.2)
    [intent] = await support.intents(stripe_harness.mandate.db)
    assert handle == {"audit_id": intent.outcome_audit_id} and intent.outcome_audit_id != intent.audit_id
    key_path = provider_settings.data_dir / "audit-keys" / "checkpoint-ed25519.pem"
    receipt = answer.structured_content or {}
    checked = check_receipt(receipt, load_or_create_signing_key(key_path)[0].public_key())
    assert checked.record_id == intent.outcome_audit_id
    assert (receipt["record"]["kind"], receipt["record"]["outcome"]) == ("effect", "succeeded")
    assert receipt["record"]["tool"] == "refund_create"
