"""The agents page's kill switch over real HTTP: suspend and resume an agent as the signed-in person, through the
``principal_suspend`` and ``principal_resume`` tools (scope check and audit record included)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlmodel import col, select

from server.audit.models import AuditRecord
from server.guards.store import Suspension
from tests.console.helpers import Browser
from tests.live import LiveServer

pytestmark = pytest.mark.anyio

REFUND = {"order_id": "ord_5002", "amount": "5.00", "currency": "EUR", "reason": "late parcel"}
SUSPEND_FORM = 'action="/console/agents/suspend"'
PERSON = "alice@example.com"


async def _agent_call(live: LiveServer) -> Any:
    """The refunds agent (client ``refunds-agent``) reads an order; the tool result."""
    async with live.harness.client("refunds") as agent:
        return await agent.call_tool("order_get", {"order_id": "ord_5002"})


def _code(result: Any) -> str | None:
    return (result.structured_content or {}).get("code") if result.is_error else None


async def _records(live: LiveServer, tool: str) -> list[AuditRecord]:
    async with live.mandate.db.session() as session:
        query = select(AuditRecord).where(AuditRecord.tool == tool).order_by(col(AuditRecord.seq))
        return list((await session.exec(query)).all())


async def _suspensions(live: LiveServer) -> list[Suspension]:
    async with live.mandate.db.session() as session:
        return list((await session.exec(select(Suspension))).all())


async def _signed_in_responder(browser: Browser, live: LiveServer) -> str:
    """The agent has been active, a security responder is signed in; the CSRF token of the agents page."""
    assert _code(await _agent_call(live)) is None
    await browser.log_in(identity="security", subject=PERSON, next_path="/console/agents")
    return await browser.csrf("/console/agents")


async def _suspend(browser: Browser, csrf: str, reason: str = "refund loop, ticket 4711") -> Any:
    return await browser.post(
        "/console/agents/suspend", {"csrf": csrf, "target": "client refunds-agent", "reason": reason}
    )


async def test_suspending_an_agent_from_the_agents_page_refuses_its_next_call_and_is_audited_with_the_person(
    browser: Browser, live: LiveServer
) -> None:
    csrf = await _signed_in_responder(browser, live)
    page = await browser.get("/console/agents")
    assert SUSPEND_FORM in page.text and 'value="client refunds-agent"' in page.text
    assert "read-only" not in page.text
    done = await _suspend(browser, csrf)
    assert done.status_code == 303 and done.headers["location"] == "/console/agents"
    refused = await _agent_call(live)
    assert _code(refused) == "suspended"
    (row,) = await _suspensions(live)
    assert (row.kind, row.value, row.reason, row.resumed_at) == (
        "client",
        "refunds-agent",
        "refund loop, ticket 4711",
        None,
    )
    assert PERSON in row.suspended_by
    (record,) = await _records(live, "principal_suspend")
    assert (record.subject, record.transport, record.outcome) == (PERSON, "console", "succeeded")
    assert row.audit_id == record.id
    shown = await browser.get("/console/agents")
    assert "Suspended: client refunds-agent" in shown.text  # the flash
    section = shown.text[shown.text.index('<h2 id="agent-') :]
    assert 'badge-deny">suspended' in section and "refund loop, ticket 4711" in section and row.id in section
    assert 'action="/console/agents/resume"' in section and SUSPEND_FORM not in section


async def test_resuming_an_agent_from_the_agents_page_lets_its_calls_through_again(
    browser: Browser, live: LiveServer
) -> None:
    csrf = await _signed_in_responder(browser, live)
    await _suspend(browser, csrf)
    assert _code(await _agent_call(live)) == "suspended"
    page = await browser.get("/console/agents")
    found = re.search(r'name="suspension_id" value="(sus_[0-9a-f]+)"', page.text)
    assert found, page.text
    done = await browser.post(
        "/console/agents/resume", {"csrf": csrf, "suspension_id": found.group(1), "reason": "prompt fixed"}
    )
    assert done.status_code == 303
    assert _code(await _agent_call(live)) is None
    (row,) = await _suspensions(live)
    assert row.resumed_at is not None and row.resume_reason == "prompt fixed" and PERSON in str(row.resumed_by)
    (record,) = await _records(live, "principal_resume")
    assert (record.subject, record.transport, record.outcome) == (PERSON, "console", "succeeded")
    shown = await browser.get("/console/agents")
    assert "Resumed: client refunds-agent." in shown.text and 'badge-allow">active' in shown.text


async def test_a_suspend_or_resume_without_a_reason_gets_a_clear_error_and_changes_nothing(
    browser: Browser, live: LiveServer
) -> None:
    csrf = await _signed_in_responder(browser, live)
    refused = await _suspend(browser, csrf, reason="   ")
    assert (
        refused.status_code == 400 and "A reason is required" in refused.text and "Nothing was changed" in refused.text
    )
    assert await _suspensions(live) == [] and await _records(live, "principal_suspend") == []
    assert _code(await _agent_call(live)) is None
    await _suspend(browser, csrf)
    (row,) = await _suspensions(live)
    kept = await browser.post("/console/agents/resume", {"csrf": csrf, "suspension_id": row.id, "reason": ""})
    assert kept.status_code == 400 and "A reason is required" in kept.text
    assert _code(await _agent_call(live)) == "suspended"


async def test_a_suspend_form_without_the_csrf_token_is_refused_and_changes_nothing(
    browser: Browser, live: LiveServer
) -> None:
    await _signed_in_responder(browser, live)
    refused = await _suspend(browser, "not-the-token")
    assert refused.status_code == 403 and "Form refused" in refused.text
    missing = await browser.post("/console/agents/suspend", {"target": "client refunds-agent", "reason": "loop"})
    assert missing.status_code == 403
    assert await _suspensions(live) == [] and _code(await _agent_call(live)) is None
    async with live.mandate.db.session() as session:
        csrf_refusals = (
            await session.exec(
                select(AuditRecord).where(AuditRecord.kind == "console", AuditRecord.reason_code == "csrf")
            )
        ).all()
    assert len(csrf_refusals) == 2 and all(r.subject == PERSON for r in csrf_refusals)


async def test_a_person_without_principals_suspend_sees_no_buttons_and_a_forged_post_is_refused(
    browser: Browser, live: LiveServer
) -> None:
    assert _code(await _agent_call(live)) is None
    await browser.log_in(identity="supervisor", next_path="/console/agents")
    page = await browser.get("/console/agents")
    assert page.status_code == 200 and "refunds-agent" in page.text
    assert SUSPEND_FORM not in page.text and 'action="/console/agents/resume"' not in page.text
    forged = await _suspend(browser, await browser.csrf("/console/agents"))
    assert forged.status_code == 403 and "insufficient_scope" in forged.text
    assert await _suspensions(live) == [] and _code(await _agent_call(live)) is None
    (record,) = await _records(live, "principal_suspend")
    assert (record.subject, record.transport, record.decision) == ("agent:supervisor", "console", "deny")
