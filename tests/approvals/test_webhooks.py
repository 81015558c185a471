"""The approval webhook: Standard Webhooks signatures, a durable outbox, retries, and a secret that never leaks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import anyio
import httpx2
import pytest
from pydantic import SecretStr
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from server.config import ConfigError, WebhookSettings, load_settings
from server.storage.database import Database
from server.webhooks import WebhookMessage, Webhooks, signature, verify
from tests.approvals.receiver import receiver
from tests.live import bound_socket

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as http:
        yield http


def _webhooks(url: str, *, max_attempts: int = 5) -> Webhooks:
    settings = WebhookSettings(url=url, secret=SecretStr(SECRET), timeout_seconds=2, max_attempts=max_attempts)
    return Webhooks(settings, retry_base=timedelta(seconds=10))


async def _enqueue(db: Database, webhooks: Webhooks, event_type: str = "approval.created") -> None:
    async def work(session: AsyncSession) -> None:
        await webhooks.enqueue(session, event_type, {"approval_id": "apr_1", "status": "pending"}, NOW)

    await db.run_in_transaction(work)


async def _messages(db: Database) -> list[WebhookMessage]:
    async with db.session() as session:
        return list((await session.exec(select(WebhookMessage))).all())


def test_the_signature_matches_the_standard_webhooks_reference_vector() -> None:
    body = '{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signature(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


async def test_a_message_is_posted_as_json_with_a_signature_the_receiver_can_verify(
    db: Database, client: httpx2.AsyncClient
) -> None:
    async with receiver() as hook:
        webhooks = _webhooks(hook.url)
        await _enqueue(db, webhooks)
        assert await webhooks.send_due(db, client, NOW) == 1
        assert await webhooks.send_due(db, client, NOW + timedelta(hours=2)) == 0  # delivered once, not again
    [delivery] = hook.deliveries
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.headers["webhook-id"].startswith("msg_")
    assert verify(SECRET, delivery.headers, delivery.body)
    assert not verify("whsec_" + "A" * 32, delivery.headers, delivery.body)
    assert delivery.payload == {
        "type": "approval.created",
        "timestamp": NOW.isoformat(),
        "data": {"approval_id": "apr_1", "status": "pending"},
    }


async def test_a_failed_delivery_is_retried_with_growing_delays_and_then_delivered_once(
    db: Database, client: httpx2.AsyncClient
) -> None:
    async with receiver(fail_first=2) as hook:
        webhooks = _webhooks(hook.url)
        await _enqueue(db, webhooks)
        assert await webhooks.send_due(db, client, NOW) == 0
        assert await webhooks.send_due(db, client, NOW + timedelta(seconds=5)) == 0  # not due again yet
        assert await webhooks.send_due(db, client, NOW + timedelta(seconds=10)) == 0  # second attempt fails
        assert await webhooks.send_due(db, client, NOW + timedelta(seconds=25)) == 0  # next one is 20 s later
        assert await webhooks.send_due(db, client, NOW + timedelta(seconds=30)) == 1
    assert len(hook.deliveries) == 1
    [message] = await _messages(db)
    assert (message.attempts, message.delivered_at, message.last_error) == (3, NOW + timedelta(seconds=30), None)
    ids = {d.headers["webhook-id"] for d in hook.deliveries}
    assert ids == {message.id}  # the same message id on every attempt, so receivers can drop duplicates


async def test_an_unreachable_receiver_is_given_up_after_the_last_attempt_with_the_error_kept(
    db: Database, client: httpx2.AsyncClient
) -> None:
    closed = bound_socket()  # bound but never listening: connections are refused
    url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    try:
        webhooks = _webhooks(url, max_attempts=2)
        await _enqueue(db, webhooks)
        await webhooks.send_due(db, client, NOW)
        await webhooks.send_due(db, client, NOW + timedelta(minutes=5))
        assert await webhooks.send_due(db, client, NOW + timedelta(hours=5)) == 0
    finally:
        closed.close()
    [message] = await _messages(db)
    assert message.attempts == 2
    assert message.given_up_at is not None and message.delivered_at is None
    assert message.last_error is not None and "could not reach" in message.last_error


async def test_two_senders_racing_send_each_attempt_once(db: Database, client: httpx2.AsyncClient) -> None:
    async with receiver() as hook:
        webhooks = _webhooks(hook.url)
        for _ in range(3):
            await _enqueue(db, webhooks)
        async with anyio.create_task_group() as group:
            for _ in range(2):
                group.start_soon(webhooks.send_due, db, client, NOW)
    assert len(hook.deliveries) == 3
    assert len({d.headers["webhook-id"] for d in hook.deliveries}) == 3


async def test_the_secret_is_never_stored_logged_or_printed(
    db: Database, client: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with receiver(fail_first=1) as hook:
        webhooks = _webhooks(hook.url)
        await _enqueue(db, webhooks)
        await webhooks.send_due(db, client, NOW)
        await webhooks.send_due(db, client, NOW + timedelta(minutes=1))
    stored = " ".join(repr(message.model_dump()) for message in await _messages(db))
    settings = load_settings(environ={"MANDATE_WEBHOOK_URL": hook.url, "MANDATE_WEBHOOK_SECRET": SECRET})
    for place in (stored, caplog.text, repr(settings), str(settings.model_dump()), settings.describe()):
        assert SECRET not in place
        assert SECRET.removeprefix("whsec_") not in place
    assert settings.webhook.secret is not None and settings.webhook.secret.get_secret_value() == SECRET


def test_a_webhook_url_without_a_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="secret"):
        load_settings(environ={"MANDATE_WEBHOOK_URL": "https://hooks.example.com/mandate"})


async def test_nothing_is_queued_when_no_webhook_is_configured(db: Database) -> None:
    await _enqueue(db, Webhooks(WebhookSettings()))
    assert await _messages(db) == []
