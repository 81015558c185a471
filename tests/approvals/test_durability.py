"""Approvals live in the database, not in a process: they survive a restart, and two server processes deciding the
same approval at the same moment run the action once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx2
import pytest
from pydantic import SecretStr
from sqlmodel import col, select

from server.app import open_mandate
from server.approvals import Approval
from server.approvals.maintenance import Maintenance
from server.audit.models import AuditRecord
from server.config import Settings, WebhookSettings
from server.webhooks import WebhookMessage, verify
from tests.approvals.receiver import receiver
from tests.conftest import Harness
from tests.idempotency.processes import race
from tools.store.models import Refund
from tools.store.seed import seed_demo_store

pytestmark = pytest.mark.anyio

BIG_REFUND = {"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": "monitor arrived broken"}
KEY = "refund-ord_5002-monitor"
META = "io.mandate/idempotency"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@asynccontextmanager
async def _process(settings: Settings, instance: str) -> AsyncIterator[Harness]:
    """One server process's Mandate on the test's database and data directory (seeded once, like the fixture's)."""
    mandate = await open_mandate(settings.model_copy(update={"instance": instance}), local_dev_jwks=True)
    try:
        now = datetime.now(UTC)
        await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, now))
        yield Harness(mandate)
    finally:
        await mandate.aclose()


async def _call(harness: Harness, agent: str, tool: str, arguments: dict[str, Any], **token: Any) -> Any:
    async with harness.client(agent, **token) as client:
        with anyio.fail_after(10):
            return await client.call_tool(tool, arguments)


async def _request(harness: Harness, arguments: dict[str, Any]) -> str:
    result = await _call(harness, "refunds", "refund_create", arguments)
    assert not result.is_error, result.content
    assert result.structured_content["status"] == "pending_approval"
    approval_id: str = result.structured_content["approval_id"]
    return approval_id


def _decision(approval_id: str, comment: str) -> dict[str, Any]:
    return {"approval_id": approval_id, "decision": "approve", "comment": comment}


async def _refunds(harness: Harness) -> list[Refund]:
    async with harness.mandate.db.session() as session:
        return list((await session.exec(select(Refund).order_by(col(Refund.created_at)))).all())


async def _records(harness: Harness, approval_id: str) -> list[AuditRecord]:
    query = select(AuditRecord).where(AuditRecord.approval_id == approval_id).order_by(col(AuditRecord.seq))
    async with harness.mandate.db.session() as session:
        return list((await session.exec(query)).all())


async def test_a_pending_approval_survives_a_restart_and_is_approved_and_run_once_after_it(
    settings: Settings,
) -> None:
    async with _process(settings, "before-restart") as before:
        approval_id = await _request(before, {**BIG_REFUND, "idempotency_key": KEY})

    async with _process(settings, "after-restart") as after:
        listing = await _call(after, "supervisor", "approvals_list", {})
        [item] = listing.structured_content["items"]
        assert (item["approval_id"], item["status"]) == (approval_id, "pending")
        detail = await _call(after, "supervisor", "approval_get", {"approval_id": approval_id})
        assert detail.structured_content["full_arguments"] == BIG_REFUND  # the key is the agent's, not the action's

        decision = _decision(approval_id, "ok")
        decided = await _call(after, "supervisor", "approval_decide", decision, subject="human:alice")
        assert not decided.is_error, decided.content
        assert decided.structured_content["status"] == "executed"
        [refund] = await _refunds(after)
        assert refund.amount_minor == 15000 and refund.created_by.endswith("|refunds-agent|agent:refunds")

        # the agent retrying with its key, across the restart, gets the refund itself, and no second one is made
        retried = await _call(after, "refunds", "refund_create", {**BIG_REFUND, "idempotency_key": KEY})
        assert not retried.is_error, retried.content
        assert retried.structured_content["refund_id"] == refund.id
        assert (retried.meta or {})[META]["replayed"] is True
        again = await _call(
            after, "supervisor", "approval_decide", _decision(approval_id, "again"), subject="human:bob"
        )
        assert again.is_error and again.structured_content["code"] == "approval_already_decided"
        assert len(await _refunds(after)) == 1

        records = await _records(after, approval_id)
        requested = next(r for r in records if r.outcome == "pending_approval")
        run = next(r for r in records if r.tool == "refund_create" and r.outcome == "succeeded")
        assert (requested.instance, run.instance) == ("before-restart", "after-restart")
        assert (run.subject, run.transport, refund.audit_id) == ("agent:refunds", "approval", run.id)


async def test_a_webhook_message_queued_before_a_restart_is_delivered_after_it(settings: Settings) -> None:
    async with receiver() as hook:
        webhook = WebhookSettings(url=hook.url, secret=SecretStr(SECRET), timeout_seconds=2)
        notifying = settings.model_copy(update={"webhook": webhook})
        async with _process(notifying, "before-restart") as before:
            approval_id = await _request(before, BIG_REFUND)
        async with _process(notifying, "after-restart") as after, httpx2.AsyncClient() as client:
            maintenance = Maintenance(
                after.mandate.db, after.mandate.approvals, client, interval=60, clock=after.mandate.enforcer.clock
            )
            with anyio.fail_after(30):
                assert (await maintenance.run_once()).delivered == 1
            async with after.mandate.db.session() as session:
                [message] = (await session.exec(select(WebhookMessage))).all()
    [delivery] = hook.deliveries
    assert delivery.headers["webhook-id"] == message.id and message.delivered_at is not None
    assert verify(SECRET, delivery.headers, delivery.body)
    body = json.loads(delivery.body)
    assert (body["type"], body["data"]["approval_id"]) == ("approval.created", approval_id)


def _outcomes(answers: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [answer for job in answers for answer in job]


async def test_two_processes_approving_the_same_approval_at_once_refund_once(harness: Harness) -> None:
    approval_id = await _request(harness, BIG_REFUND)
    jobs = [
        [{"token": harness.token("supervisor", subject=subject), "tool": "approval_decide", "arguments": arguments}]
        for subject, arguments in (
            ("human:alice", _decision(approval_id, "alice approves")),
            ("human:bob", _decision(approval_id, "bob approves")),
        )
    ]
    answers = _outcomes(await race(harness, jobs))

    won = [a["body"] for a in answers if not a["is_error"]]
    lost = [a["body"] for a in answers if a["is_error"]]
    assert len(won) == 1 and len(lost) == 1, answers
    assert won[0]["status"] == "executed" and won[0]["outcome"]["succeeded"] is True
    assert lost[0]["code"] == "approval_already_decided"
    winner = won[0]["decided"]["by_subject"]
    assert winner in ("human:alice", "human:bob") and winner in lost[0]["message"]

    [refund] = await _refunds(harness)
    assert refund.amount_minor == 15000 and won[0]["outcome"]["result"]["refund_id"] == refund.id
    async with harness.mandate.db.session() as session:
        approval = await session.get(Approval, approval_id)
    assert approval is not None
    assert (approval.status, approval.decided_by_subject) == ("executed", winner)
    records = await _records(harness, approval_id)
    assert [r.subject for r in records if r.tool == "refund_create" and r.outcome == "succeeded"] == ["agent:refunds"]
    decisions = [r for r in records if r.tool == "approval_decide"]
    assert sorted((r.outcome, r.reason_code, r.transport) for r in decisions) == [
        ("failed", "approval_already_decided", "worker"),
        ("succeeded", "allowed", "worker"),
    ]


async def test_several_approvals_decided_by_two_processes_at_once_each_run_exactly_once(harness: Harness) -> None:
    # three customers, so no budget of one customer decides for another
    requests = [
        BIG_REFUND,
        {"order_id": "ord_5005", "amount": "150.00", "currency": "USD", "reason": "desk wobbles"},
        {"order_id": "ord_5007", "amount": "150.00", "currency": "USD", "reason": "screen cracked"},
    ]
    approval_ids = [await _request(harness, arguments) for arguments in requests]
    jobs = [
        [
            {
                "token": harness.token("supervisor", subject=subject),
                "tool": "approval_decide",
                "arguments": _decision(approval_id, f"{subject} approves"),
            }
            for approval_id in approval_ids
        ]
        for subject in ("human:alice", "human:bob")
    ]
    answers = await race(harness, jobs)

    for index, approval_id in enumerate(approval_ids):
        pair = [job[index] for job in answers]
        assert sorted(a["is_error"] for a in pair) == [False, True], pair
        [won] = [a["body"] for a in pair if not a["is_error"]]
        [lost] = [a["body"] for a in pair if a["is_error"]]
        assert (won["approval_id"], won["status"], lost["code"]) == (
            approval_id,
            "executed",
            "approval_already_decided",
        )
    refunds = await _refunds(harness)
    assert sorted(r.order_id for r in refunds) == ["ord_5002", "ord_5005", "ord_5007"]
    assert all(r.amount_minor == 15000 for r in refunds)
