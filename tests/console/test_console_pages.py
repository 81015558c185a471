"""The investigation pages over real HTTP: the audit browser (filters, a record, lineage, chain verification),
agents, and the policy with its explain form."""

from __future__ import annotations

import re

import pytest

from tests.console.helpers import Browser, request_refund
from tests.live import LiveServer

pytestmark = pytest.mark.anyio


async def _approve(browser: Browser, approval_id: str) -> str:
    csrf = await browser.csrf(f"/console/approvals/{approval_id}")
    done = await browser.post(f"/console/approvals/{approval_id}/decision", {"csrf": csrf, "decision": "approve"})
    page = await browser.get(done.headers["location"])
    found = re.search(
        r'href="/console/audit/records/(aud_[0-9a-f]+)">aud_[0-9a-f]+</a> \(with its lineage\)', page.text
    )
    assert found, page.text
    return found.group(1)


async def test_the_audit_browser_filters_by_agent_tool_and_outcome(browser: Browser, live: LiveServer) -> None:
    await request_refund(live.harness)
    await browser.log_in()
    page = await browser.get("/console/audit?agent=refunds-agent&tool=refund_create&outcome=pending_approval")
    assert page.status_code == 200
    rows = re.findall(r'aria-label="Open record (\d+)"', page.text)
    assert len(rows) == 1 and "pending_approval" in page.text
    none = await browser.get("/console/audit?agent=refunds-agent&outcome=succeeded")
    assert "No records match." in none.text
    bad = await browser.get("/console/audit?since=yesterday-ish")
    assert bad.status_code == 400 and "Refused" in bad.text


async def test_an_executed_refund_leads_from_its_effect_to_its_cause_approval_and_trace(
    browser: Browser, live: LiveServer
) -> None:
    approval_id = await request_refund(live.harness)
    await browser.log_in()
    record_id = await _approve(browser, approval_id)
    page = await browser.get(f"/console/audit/records/{record_id}")
    assert page.status_code == 200
    lineage = page.text[page.text.index('id="lineage"') :]
    assert "Effect</strong>: refund" in lineage and "150.00" in lineage
    assert f'href="/console/approvals/{approval_id}"' in lineage
    assert "approval_decide allow/succeeded by agent:supervisor" in lineage
    assert "Trace</strong>:" in lineage


async def test_verifying_the_chain_reports_it_intact_and_names_the_missing_checkpoint(browser: Browser) -> None:
    await browser.log_in()
    csrf = await browser.csrf("/console/audit")
    page = await browser.post("/console/audit/verify", {"csrf": csrf})
    assert page.status_code == 200 and "The chain verifies:" in page.text
    assert "no checkpoint has been signed yet" in page.text


async def test_the_agents_page_shows_activity_denials_and_todays_budget(browser: Browser, live: LiveServer) -> None:
    async with live.harness.client("refunds") as client:
        await client.call_tool(
            "refund_create", {"order_id": "ord_5002", "amount": "20.00", "currency": "EUR", "reason": "late"}
        )
        await client.call_tool("order_cancel", {"order_id": "ord_5002"})  # not in its scopes: denied
    await browser.log_in()
    page = await browser.get("/console/agents")
    assert page.status_code == 200
    section = page.text[page.text.index('<h2 id="agent-') :]
    assert "refunds-agent" in section and "1 denied" in section
    assert "20.00 EUR" in section or "EUR 20.00" in section
    assert "read-only" not in page.text


async def test_the_policy_page_explains_a_hypothetical_refund_without_recording_it(
    browser: Browser, live: LiveServer
) -> None:
    await browser.log_in()
    page = await browser.get("/console/policy")
    version = live.mandate.enforcer.policies.current().version
    assert page.status_code == 200 and version in page.text
    csrf = await browser.csrf("/console/policy")
    form = {
        "csrf": csrf,
        "agent": "refunds",
        "tool": "refund_create",
        "arguments": '{"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": "broken"}',
    }
    explained = await browser.post("/console/policy/explain", form)
    assert explained.status_code == 200 and "badge-approval" in explained.text
    bad = await browser.post("/console/policy/explain", {**form, "arguments": "[1, 2]"})
    assert bad.status_code == 400 and "not a JSON object" in bad.text
