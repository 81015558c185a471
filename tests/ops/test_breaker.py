"""A circuit breaker, as policy data: an agent passing a threshold within a window (denials, approval requests, a
share of its budget) is suspended pending a human, with an audit record, a webhook event and a metric; in shadow
mode it records and alerts but suspends no one."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from server.config import Settings, WebhookSettings
from server.guards.store import Suspension
from server.webhooks import WebhookMessage
from tests.conftest import Harness
from tests.ops.support import BIG_REFUND, REFUND, audit_rows, body, code, guarded

pytestmark = pytest.mark.anyio

AGENT = ("customers:read", "orders:read", "refunds:create")
HOOK = WebhookSettings(url="http://127.0.0.1:9/hooks", secret="whsec_c2VjcmV0LXNlY3JldA==")  # type: ignore[arg-type]
TOO_BIG = {**REFUND, "amount": "9000.00"}  # above the ceiling: denied


def breaker(on: str, mode: str, extra: str) -> str:
    return f'[[breakers]]\nid = "storm"\non = "{on}"\nmode = "{mode}"\n{extra}\n'


async def _tripped(harness: Harness) -> tuple[list[Suspension], list[dict[str, object]]]:
    async with harness.mandate.db.session() as session:
        suspensions = list((await session.exec(select(Suspension))).all())
        messages = [json.loads(m.body) for m in (await session.exec(select(WebhookMessage))).all()]
    return suspensions, [m for m in messages if m["type"] == "breaker.tripped"]


async def test_too_many_denials_suspend_the_agent_pending_a_human(settings: Settings) -> None:
    policy = breaker("denials", "enforce", 'threshold = 3\nwindow = "10 minutes"')
    async with guarded(settings, policy, webhook=HOOK) as harness:
        async with harness.client("refunds", scopes=AGENT) as agent:
            denied = [await agent.call_tool("refund_create", TOO_BIG) for _ in range(3)]
            assert all(d.is_error and code(d) not in (None, "suspended") for d in denied)
            assert code(await agent.call_tool("order_get", {"order_id": "ord_5001"})) == "suspended"
            assert (await agent.list_tools()).tools == []
        suspensions, events = await _tripped(harness)
        assert len(suspensions) == 1 and suspensions[0].source == "breaker:storm" and suspensions[0].kind == "principal"
        assert "3 denials" in suspensions[0].reason
        assert len(events) == 1
        data = events[0]["data"]
        assert isinstance(data, dict) and data["mode"] == "enforce" and data["suspension_id"] == suspensions[0].id
        trips = await audit_rows(harness, "reason_code = 'breaker_tripped'")
        assert len(trips) == 1 and trips[0]["kind"] == "guard" and trips[0]["client_id"] == "refunds-agent"
        assert suspensions[0].audit_id == trips[0]["id"]
        labels = {"breaker": "storm", "mode": "enforce"}
        assert harness.mandate.metrics.registry.get_sample_value("mandate_breaker_trips_total", labels) == 1.0


async def test_a_shadow_breaker_records_and_alerts_but_suspends_no_one(settings: Settings) -> None:
    policy = breaker("denials", "shadow", 'threshold = 2\nwindow = "10 minutes"')
    async with guarded(settings, policy, webhook=HOOK) as harness:
        async with harness.client("refunds", scopes=AGENT) as agent:
            for _ in range(4):
                await agent.call_tool("refund_create", TOO_BIG)
            assert not (await agent.call_tool("order_get", {"order_id": "ord_5001"})).is_error
        suspensions, events = await _tripped(harness)
        assert suspensions == []
        assert len(events) == 1  # once per window, not at every denial past the threshold
        data = events[0]["data"]
        assert isinstance(data, dict) and data["mode"] == "shadow" and data["suspension_id"] is None
        assert len(await audit_rows(harness, "reason_code = 'breaker_tripped'")) == 1
        labels = {"breaker": "storm", "mode": "shadow"}
        assert harness.mandate.metrics.registry.get_sample_value("mandate_breaker_trips_total", labels) == 1.0


async def test_too_many_approval_requests_trip_the_breaker(settings: Settings) -> None:
    policy = breaker("approval_requests", "enforce", 'threshold = 2\nwindow = "1 hour"')
    async with guarded(settings, policy) as harness, harness.client("refunds", scopes=AGENT) as agent:
        first = await agent.call_tool("refund_create", BIG_REFUND)
        second = await agent.call_tool("refund_create", {**BIG_REFUND, "amount": "151.00"})
        assert body(first)["status"] == body(second)["status"] == "pending_approval"
        assert code(await agent.call_tool("refund_create", REFUND)) == "suspended"


async def test_spending_a_share_of_a_budget_trips_the_breaker(settings: Settings) -> None:
    policy = breaker("budget_share", "enforce", 'budget = "agent_refunds_daily"\nshare = 0.025')
    async with guarded(settings, policy) as harness:
        async with harness.client("refunds", scopes=AGENT) as agent:
            answers = [await agent.call_tool("refund_create", REFUND) for _ in range(3)]  # 15 of 500: 3%
            assert [a.is_error for a in answers] == [False, False, False]
            assert code(await agent.call_tool("refund_create", REFUND)) == "suspended"
        suspensions, _ = await _tripped(harness)
        assert len(suspensions) == 1 and "3% of budget agent_refunds_daily" in suspensions[0].reason


async def test_resuming_a_tripped_agent_lets_it_act_again(settings: Settings) -> None:
    policy = breaker("denials", "enforce", 'threshold = 1\nwindow = "10 minutes"')
    async with guarded(settings, policy) as harness, harness.client("refunds", scopes=AGENT) as agent:
        await agent.call_tool("refund_create", TOO_BIG)
        assert code(await agent.call_tool("refund_create", REFUND)) == "suspended"
        suspensions, _ = await _tripped(harness)
        scopes = ("principals:suspend",)
        async with harness.client("security", scopes=scopes, subject="human:sec") as sec:
            resumed = await sec.call_tool(
                "principal_resume", {"suspension_id": suspensions[0].id, "reason": "looked at it"}
            )
            assert not resumed.is_error
        assert not (await agent.call_tool("refund_create", REFUND)).is_error
