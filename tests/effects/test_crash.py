"""kill -9 of a real ``mandate serve`` between the provider call and the outcome, and a provider that stops
mid-call: after a restart the reconciler leaves exactly one provider refund per intent (or none, when the request
never reached it), the ledger, the audit trail and the provider agree, and ``mandate audit verify`` passes.

Real parts throughout: ``mandate serve`` subprocesses, the Stripe adapter over the ``stripe`` SDK, a localstripe
HTTP server (the payments fixtures), SQLite or PostgreSQL (``MANDATE_TEST_DATABASE_URL``).
"""

from __future__ import annotations

import pytest

# The real Stripe adapter and the localstripe fixtures come with the payments provider (server/providers/).
pytest.importorskip("server.providers.localstripe", reason="the payments provider (server/providers) is not installed")

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import stripe

from server.effects.models import COMPLETED, FAILED, STARTED, EffectIntent
from server.storage.database import Database
from tests.effects import support
from tests.effects.processes import Served, environment, free_port, run, serving

if TYPE_CHECKING:
    from server.providers.localstripe import LocalStripe

pytestmark = pytest.mark.anyio


async def _seeded(
    tmp_path: Path, database_url: str, localstripe: LocalStripe, provider_timeout: float = 4.0
) -> dict[str, str]:
    """The environment of a deployment on this database and provider, its store seeded and linked to payments.

    The lease is twice the provider's timeout: an intent left in doubt is resolved once it has passed, so the tests
    wait about that long. 4 s is ample for a local localstripe to answer one refund, even on a loaded machine."""
    env = environment(
        data_dir=tmp_path / "data",
        database_url=database_url,
        payments=localstripe.payments_settings(timeout_seconds=provider_timeout),
        lease=max(2.0, provider_timeout * 2),
    )
    seeded = await run(env, "seed")
    assert seeded.returncode == 0, seeded.stderr
    return env


async def _call_until_it_dies(served: Served) -> None:
    try:
        result = await served.call("refund_create", support.REFUND)
    except Exception:  # noqa: BLE001 - the server died under the request: the client sees a broken connection
        result = None
    assert result is None, f"the server answered instead of dying: {result}"
    assert await served.died() == -signal.SIGKILL


def _provider_refunds(client: stripe.StripeClient, payment_ref: str, intent_id: str) -> list[Any]:
    listed = client.v1.refunds.list(params={"payment_intent": payment_ref, "limit": 100})
    return [r for r in listed.data if r.metadata and r.metadata.to_dict().get("mandate_intent") == intent_id]


async def _resolved(db: Database) -> EffectIntent:
    """Poll (generous deadline) until the restarted server's reconciler resolves the one intent."""
    with anyio.fail_after(60):
        while True:
            [intent] = await support.intents(db)
            if intent.status != STARTED:
                return intent
            await anyio.sleep(0.1)


async def _reconciled_by_hand(db: Database, env: dict[str, str]) -> EffectIntent:
    """``mandate effects reconcile`` until the lease has passed and it resolves the intent (generous deadline)."""
    with anyio.fail_after(60):
        while True:
            done = await run(env, "effects", "reconcile", "--json")
            assert done.returncode in (0, 1), done.stderr
            [intent] = await support.intents(db)
            if intent.status != STARTED:
                assert intent.id in done.stdout.decode()
                return intent
            await anyio.sleep(0.2)


async def _agree(db: Database, env: dict[str, str], client: stripe.StripeClient, intent: EffectIntent) -> None:
    """Ledger, store, audit trail and provider tell the same story, and the audit chain verifies."""
    order = await support.order(db)
    assert order.payment_ref is not None
    at_provider = await anyio.to_thread.run_sync(_provider_refunds, client, order.payment_ref, intent.id)
    refunds = await support.refunds(db)
    outcomes = [r.outcome for r in await support.records(db)]
    if intent.status == COMPLETED:
        [made] = at_provider
        assert (intent.provider_object_id, made.amount) == (made.id, 1250)
        assert [r.provider_refund_id for r in refunds] == [made.id]
        assert (order.refunded_minor, await support.spent(db)) == (1250, 1250)
        assert outcomes == ["started", "succeeded"]
    else:
        assert intent.status == FAILED and at_provider == [] and refunds == []
        assert (order.refunded_minor, await support.spent(db)) == (0, 0)
        assert outcomes == ["started", "failed"]
    verified = await run(env, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize(("fault", "made"), [("after_provider_call", True), ("after_intent_commit", False)])
async def test_a_server_killed_mid_refund_leaves_exactly_one_outcome_after_a_restart(
    tmp_path: Path,
    database_url: str,
    localstripe: LocalStripe,
    stripe_outside: stripe.StripeClient,
    fault: str,
    made: bool,
) -> None:
    env = await _seeded(tmp_path, database_url, localstripe)
    async with serving({**env, "MANDATE_FAULT_POINT": fault}, free_port()) as served:
        await _call_until_it_dies(served)

    db = Database(database_url)
    try:
        [intent] = await support.intents(db)
        assert intent.status == STARTED
        order = await support.order(db)
        assert order.payment_ref is not None
        before = await anyio.to_thread.run_sync(_provider_refunds, stripe_outside, order.payment_ref, intent.id)
        assert len(before) == (1 if made else 0)
        assert await support.spent(db) == 1250  # in doubt: still reserved

        if made:  # a restarted server's upkeep resolves it
            async with serving(env, free_port()):
                intent = await _resolved(db)
        else:  # or an operator, on demand, once the lease has passed
            intent = await _reconciled_by_hand(db, env)
        assert intent.status == (COMPLETED if made else FAILED)
        assert intent.resolved_by == "reconciler"
        await _agree(db, env, stripe_outside, intent)
    finally:
        await db.dispose()


async def test_a_provider_that_hangs_mid_call_then_a_killed_server_resolve_to_one_outcome(
    tmp_path: Path, database_url: str, localstripe: LocalStripe, stripe_outside: stripe.StripeClient
) -> None:
    env = await _seeded(tmp_path, database_url, localstripe, provider_timeout=1.0)
    async with serving(env, free_port()) as served:
        localstripe.pause()  # SIGSTOP: connections are accepted, nothing answers
        try:
            result = await served.call("refund_create", support.REFUND)
        finally:
            localstripe.resume()
        assert result.is_error and result.structured_content["code"] == "effect_in_doubt", result.content
        served.process.send_signal(signal.SIGKILL)
        await served.died()

    db = Database(database_url)
    try:
        async with serving(env, free_port()):
            intent = await _resolved(db)
        await _agree(db, env, stripe_outside, intent)
    finally:
        await db.dispose()


async def test_a_provider_killed_mid_call_and_restarted_leaves_nothing_reserved(
    tmp_path: Path, database_url: str, localstripe: LocalStripe, stripe_outside: stripe.StripeClient
) -> None:
    env = await _seeded(tmp_path, database_url, localstripe, provider_timeout=1.0)
    db = Database(database_url)
    try:
        async with serving(env, free_port()) as served:
            localstripe.kill()
            result = await served.call("refund_create", support.REFUND)
            assert result.structured_content["code"] == "effect_in_doubt", result.content
            await anyio.to_thread.run_sync(localstripe.restart)
            intent = await _resolved(db)
        assert intent.status == FAILED and intent.error_code == "effect_not_made"
        await _agree(db, env, stripe_outside, intent)
        listed = await run(env, "effects", "list", "--json")
        assert intent.id in listed.stdout.decode()
    finally:
        await db.dispose()
