"""Telling people about approvals end to end: an agent's request, a decision and an expiry each put one signed
message in the outbox in their own transaction, the background upkeep delivers it, and a receiver that is down
never holds up or fails an agent's call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx2
import pytest
from pydantic import SecretStr
from sqlmodel import col, select

from server.app import open_mandate
from server.approvals.maintenance import Maintenance, Round
from server.config import Settings, WebhookSettings
from server.webhooks import WebhookMessage, verify
from tests.approvals.receiver import Receiver, receiver
from tests.conftest import Harness
from tests.live import bound_socket
from tools.store.seed import seed_demo_store

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BIG_REFUND = {"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": "monitor arrived broken"}


@asynccontextmanager
async def _notifying(settings: Settings, url: str, **changes: Any) -> AsyncIterator[Harness]:
    """A seeded Mandate like the ``harness`` fixture's, whose webhook points at ``url``."""
    webhook = WebhookSettings(url=url, secret=SecretStr(SECRET), timeout_seconds=2)
    mandate = await open_mandate(settings.model_copy(update={"webhook": webhook, **changes}), local_dev_jwks=True)
    try:
        now = datetime.now(UTC)
        await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, now))
        yield Harness(mandate)
    finally:
        await mandate.aclose()


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    async with receiver() as running:
        yield running


@pytest.fixture
async def harness(settings: Settings, hook: Receiver) -> AsyncIterator[Harness]:
    """This module's harness: the usual one, with the webhook sent to the local receiver."""
    async with _notifying(settings, hook.url) as notifying:
        yield notifying


async def _call(harness: Harness, agent: str, tool: str, arguments: dict[str, Any], **token: Any) -> Any:
    async with harness.client(agent, **token) as client:
        with anyio.fail_after(10):
            return await client.call_tool(tool, arguments)


async def _request(harness: Harness, arguments: dict[str, Any] | None = None) -> str:
    result = await _call(harness, "refunds", "refund_create", arguments or BIG_REFUND)
    assert not result.is_error, result.content
    assert result.structured_content["status"] == "pending_approval"
    approval_id: str = result.structured_content["approval_id"]
    return approval_id


async def _decide(harness: Harness, approval_id: str, decision: str = "approve") -> Any:
    arguments = {"approval_id": approval_id, "decision": decision, "comment": "checked with the customer"}
    result = await _call(harness, "supervisor", "approval_decide", arguments, subject="human:alice")
    assert not result.is_error, result.content
    return result.structured_content


async def _outbox(harness: Harness) -> list[WebhookMessage]:
    query = select(WebhookMessage).order_by(col(WebhookMessage.created_at), col(WebhookMessage.event_type))
    async with harness.mandate.db.session() as session:
        return list((await session.exec(query)).all())


def _events(messages: list[WebhookMessage]) -> list[tuple[str, str, str]]:
    """(type, approval id, status) of each message, from its body."""
    bodies = [json.loads(m.body) for m in messages]
    assert [b["type"] for b in bodies] == [m.event_type for m in messages]
    return [(b["type"], b["data"]["approval_id"], b["data"]["status"]) for b in bodies]


async def _upkeep(harness: Harness, clock: Callable[[], datetime] | None = None) -> Round:
    """One round of the background upkeep, as a serving process runs it."""
    async with httpx2.AsyncClient(follow_redirects=False) as client:
        maintenance = Maintenance(
            harness.mandate.db,
            harness.mandate.approvals,
            client,
            interval=60,
            clock=clock or harness.mandate.enforcer.clock,
        )
        with anyio.fail_after(30):
            return await maintenance.run_once()


async def test_a_request_a_decision_and_an_expiry_each_enqueue_their_message_and_the_call_sends_nothing(
    harness: Harness, hook: Receiver
) -> None:
    approved = await _request(harness)
    assert _events(await _outbox(harness)) == [("approval.created", approved, "pending")]
    assert await _request(harness) == approved  # the same request again is the same approval: no second message
    assert len(await _outbox(harness)) == 1

    await _decide(harness, approved)
    [_, decided] = await _outbox(harness)
    assert _events([decided]) == [("approval.decided", approved, "executed")]
    data = json.loads(decided.body)["data"]
    assert (data["decided"]["by_subject"], data["decided"]["by_client_id"]) == ("human:alice", "supervisor-agent")
    assert data["outcome"]["succeeded"] is True and data["outcome"]["audit_id"].startswith("aud_")
    assert "result" not in data["outcome"]  # the action's answer is for the agent and the approver, not the hook

    expiring = await _request(harness, {**BIG_REFUND, "amount": "160.00"})
    later = harness.mandate.enforcer.clock() + timedelta(hours=25)
    assert await harness.mandate.approvals.expire_due(harness.mandate.db, later) == [expiring]
    assert await harness.mandate.approvals.expire_due(harness.mandate.db, later) == []  # expired once
    assert _events(await _outbox(harness)) == [
        ("approval.created", approved, "pending"),
        ("approval.decided", approved, "executed"),
        ("approval.created", expiring, "pending"),
        ("approval.expired", expiring, "expired"),
    ]
    assert all(m.attempts == 0 and m.delivered_at is None for m in await _outbox(harness))
    assert hook.deliveries == []  # nothing is sent from an agent's or an approver's call


async def test_upkeep_delivers_every_message_once_signed_without_free_text_or_the_secret(
    harness: Harness, hook: Receiver
) -> None:
    approved = await _request(harness)
    await _decide(harness, approved)
    expiring = await _request(harness, {**BIG_REFUND, "amount": "160.00"})
    later = harness.mandate.enforcer.clock() + timedelta(hours=25)

    # one round, 25 hours on: it expires what is due and delivers that message too
    done = await _upkeep(harness, lambda: later)
    assert (done.expired, done.delivered) == (1, 4)
    assert (await _upkeep(harness, lambda: later + timedelta(hours=2))).delivered == 0  # delivered once, not again

    messages = await _outbox(harness)
    assert all(m.delivered_at == later and m.attempts == 1 and m.last_error is None for m in messages)
    assert sorted(d.headers["webhook-id"] for d in hook.deliveries) == sorted(m.id for m in messages)
    by_id = {m.id: m for m in messages}
    for delivery in hook.deliveries:
        assert verify(SECRET, delivery.headers, delivery.body)
        assert delivery.body == by_id[delivery.headers["webhook-id"]].body
        assert delivery.headers["webhook-timestamp"] == str(int(later.timestamp()))
        assert delivery.payload["data"]["arguments"]["amount"] in ("150.00", "160.00")
        assert delivery.payload["data"]["arguments"]["reason"] != BIG_REFUND["reason"]
        everything = delivery.body + json.dumps(delivery.headers)
        assert BIG_REFUND["reason"] not in everything  # the customer's free text stays out of the hook
        assert SECRET not in everything and SECRET.removeprefix("whsec_") not in everything
    assert sorted((d.payload["type"], d.payload["data"]["approval_id"]) for d in hook.deliveries) == sorted(
        [
            ("approval.created", approved),
            ("approval.decided", approved),
            ("approval.created", expiring),
            ("approval.expired", expiring),
        ]
    )


async def test_a_rejection_and_a_run_that_failed_are_notified_with_how_they_ended(
    harness: Harness, hook: Receiver
) -> None:
    rejected = await _request(harness)
    failing = await _request(harness, {**BIG_REFUND, "amount": "300.00"})
    await _decide(harness, rejected, "reject")
    done = await _call(harness, "senior", "refund_create", {**BIG_REFUND, "amount": "100.00"})
    assert not done.is_error, done.content
    assert (await _decide(harness, failing))["status"] == "failed"

    assert (await _upkeep(harness)).delivered == 4
    decided = {d.payload["data"]["approval_id"]: d.payload["data"] for d in hook.of_type("approval.decided")}
    assert decided[rejected]["status"] == "rejected" and "outcome" not in decided[rejected]
    assert decided[rejected]["decided"]["by_subject"] == "human:alice"
    assert decided[failing]["status"] == "failed"
    assert decided[failing]["outcome"]["succeeded"] is False and decided[failing]["outcome"]["code"]


async def test_a_receiver_that_is_down_neither_blocks_nor_fails_the_agents_call(settings: Settings) -> None:
    closed = bound_socket()  # bound but never listening: every connection is refused
    url = f"http://127.0.0.1:{closed.getsockname()[1]}/hooks/mandate"
    try:
        async with _notifying(settings, url) as harness:
            with anyio.fail_after(10):
                approval_id = await _request(harness)
                status = await _call(harness, "refunds", "approval_status", {"approval_id": approval_id})
            assert not status.is_error and status.structured_content["status"] == "pending"

            now = harness.mandate.enforcer.clock()
            done = await _upkeep(harness, lambda: now)  # the failure is recorded, never raised
            assert done.delivered == 0
            [message] = await _outbox(harness)
            assert (message.event_type, message.attempts, message.delivered_at, message.given_up_at) == (
                "approval.created",
                1,
                None,
                None,
            )
            assert message.last_error is not None and "could not reach the webhook receiver" in message.last_error
            assert message.next_attempt_at > now  # kept for a later attempt
            assert SECRET.removeprefix("whsec_") not in message.last_error

            # the approver's decision is not held up either, and its message waits beside the first
            assert (await _decide(harness, approval_id))["status"] == "executed"
            assert _events(await _outbox(harness)) == [
                ("approval.created", approval_id, "pending"),
                ("approval.decided", approval_id, "executed"),
            ]
    finally:
        closed.close()


async def test_the_background_task_of_a_serving_process_delivers_without_being_asked(
    settings: Settings, hook: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _notifying(settings, hook.url, background_interval_seconds=0.05) as harness:
        webhooks = harness.mandate.approvals.webhooks
        send_due = webhooks.send_due
        delivered = anyio.Event()

        async def watched(*args: Any, **kwargs: Any) -> int:
            count = await send_due(*args, **kwargs)
            if count:
                delivered.set()
            return count

        monkeypatch.setattr(webhooks, "send_due", watched)
        async with harness.mandate.upkeep():
            approval_id = await _request(harness)
            with anyio.fail_after(10):
                await delivered.wait()
        [delivery] = hook.deliveries
        assert delivery.payload["type"] == "approval.created"
        assert delivery.payload["data"]["approval_id"] == approval_id
        assert verify(SECRET, delivery.headers, delivery.body)
