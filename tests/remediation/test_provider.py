"""Remediation on the payments provider: a refund made at a real localstripe through the stripe SDK is read there (the
system of record), flagged for a person, and never reversed; the dry run and the execution, through enforcement."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import stripe

from server.app import Mandate, open_mandate
from server.auth.principal import Principal
from server.callpath.record import CallInfo
from server.cli.seeding import seed
from server.config import ApprovalSettings, Settings
from server.providers.localstripe import LocalStripe
from server.remediation import Item, Target, execute, plan
from tests.conftest import Harness
from tests.remediation.conftest import PERSON, REFUND, RESPONDER
from tools.audit import effects_of

pytestmark = pytest.mark.anyio


async def _person(harness: Harness) -> Principal:
    token = harness.token(scopes=RESPONDER, subject="person:rita", client_id="cli", extra_claims=PERSON)
    return await harness.mandate.verifier.verify(token)


async def _plan(mandate: Mandate) -> list[Item]:
    """The rogue agent's remediation plan, with the provider's view of its refunds."""
    target = Target(client_id="rogue-agent")
    return await plan(mandate.db, mandate.catalog, target, effects_of, datetime.now(UTC), mandate.enforcer.providers)


async def test_a_provider_refund_is_read_at_the_provider_flagged_and_never_reversed(
    provider_settings: Settings, stripe_outside: stripe.StripeClient
) -> None:
    settings = provider_settings.model_copy(update={"approvals": ApprovalSettings(approver_claim="mandate_person")})
    await seed(settings)
    mandate = await open_mandate(settings, local_dev_jwks=True)
    try:
        harness = Harness(mandate)
        async with harness.client("refunds", client_id="rogue-agent") as client:
            refunded = await client.call_tool("refund_create", REFUND)
        assert not refunded.is_error and refunded.structured_content is not None, refunded.content
        provider_refund = refunded.structured_content["provider_refund_id"]
        assert provider_refund.startswith("re_")

        items = await _plan(mandate)
        [item] = items
        assert (item.effect.kind, item.compensation.action, item.compensation.tool) == (
            "refund",
            "flag",
            "refund_follow_up",
        )
        assert f"at the provider {provider_refund}: succeeded, 20.00 EUR" in item.compensation.state

        person = await _person(harness)
        [done] = await execute(mandate.enforcer, person, items, reason="incident 7", info=CallInfo(transport="cli"))
        assert done.succeeded, done.message

        again = await _plan(mandate)
        assert [i.compensation.action for i in again] == ["done"]
        payment = refunded.structured_content["order_id"]
        assert payment == REFUND["order_id"]
        at_provider = stripe_outside.v1.refunds.list(params={"limit": 100})
        assert [r.id for r in at_provider.data] == [provider_refund]  # flagged, not reversed, not refunded twice
    finally:
        await mandate.aclose()


async def test_a_refund_still_in_doubt_is_listed_and_never_compensated(
    provider_settings: Settings, localstripe: LocalStripe
) -> None:
    payments = localstripe.payments_settings(timeout_seconds=2.0)
    settings = provider_settings.model_copy(
        update={"payments": payments, "approvals": ApprovalSettings(approver_claim="mandate_person")}
    )
    await seed(settings)
    mandate = await open_mandate(settings, local_dev_jwks=True)
    try:
        harness = Harness(mandate)
        localstripe.pause()  # the provider hangs: the call times out, and nobody knows whether it refunded
        try:
            async with harness.client("refunds", client_id="rogue-agent") as client:
                answer = await client.call_tool("refund_create", REFUND)
        finally:
            localstripe.resume()
        assert answer.is_error and answer.structured_content is not None
        assert answer.structured_content["code"] == "effect_in_doubt"

        items = await _plan(mandate)
        person = await _person(harness)
        done = await execute(mandate.enforcer, person, items, reason="incident 8", info=CallInfo(transport="cli"))

        [item] = items
        assert (item.effect.kind, item.compensation.action) == ("external_intent", "none")
        assert "in doubt" in item.compensation.state and "mandate effects reconcile" in item.compensation.note
        assert done == []
    finally:
        await mandate.aclose()
