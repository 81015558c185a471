"""The console over real HTTP without a browser: login, cookies, CSRF, the approver checks and the audit trail."""

from __future__ import annotations

import pytest
from sqlmodel import col, select

from server.approvals import Approval
from server.audit.models import AuditRecord
from tests.console.helpers import Browser, request_refund
from tests.live import LiveServer
from tools.store.models import Refund

pytestmark = pytest.mark.anyio


async def _records(live: LiveServer) -> list[AuditRecord]:
    async with live.mandate.db.session() as session:
        return list((await session.exec(select(AuditRecord).order_by(col(AuditRecord.seq)))).all())


async def test_a_page_sends_a_visitor_without_a_session_to_the_login(browser: Browser) -> None:
    response = await browser.get("/console/approvals")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=%2Fconsole%2Fapprovals"


async def test_a_supervisor_logs_in_with_pkce_and_gets_an_httponly_strict_session_cookie(browser: Browser) -> None:
    started = await browser.get("/console/login")
    query = started.headers["location"]
    assert "code_challenge_method=S256" in query and "code_challenge=" in query and "state=" in query
    assert "resource=" in query
    cookie = started.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # plain http on 127.0.0.1: a Secure cookie would never come back
    await browser.log_in()
    page = await browser.get("/console/approvals")
    assert page.status_code == 200 and "agent:supervisor" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_the_login_is_audited_with_the_person_and_no_token_reaches_a_record_or_url(
    browser: Browser, live: LiveServer
) -> None:
    await browser.log_in(subject="alice@example.com")
    records = await _records(live)
    login = [r for r in records if r.kind == "console" and r.outcome == "signed_in"]
    assert len(login) == 1 and login[0].subject == "alice@example.com" and login[0].transport == "console"
    async with live.mandate.db.session() as session:
        from server.console.sessions import ConsoleSession

        (row,) = (await session.exec(select(ConsoleSession))).all()
    assert row.access_token is not None
    assert all(row.access_token not in (r.arguments + r.result_summary + (r.reason or "")) for r in records)
    cookie_value = next(iter(browser.http.cookies.values()))
    assert row.id != cookie_value  # the table keeps a digest of the cookie, never the cookie itself


async def test_a_callback_with_another_browsers_state_is_refused(browser: Browser) -> None:
    await browser.get("/console/login")
    refused = await browser.get("/console/callback?code=abc&state=not-the-one")
    assert refused.status_code == 400 and "not started in this browser" in refused.text


async def test_a_supervisor_approves_a_pending_refund_and_it_runs_once(browser: Browser, live: LiveServer) -> None:
    approval_id = await request_refund(live.harness)
    await browser.log_in()
    queue = await browser.get("/console/approvals")
    assert approval_id in queue.text and "ord_5002" in queue.text and "agent:refunds" in queue.text
    csrf = await browser.csrf(f"/console/approvals/{approval_id}")
    decided = await browser.post(
        f"/console/approvals/{approval_id}/decision", {"csrf": csrf, "decision": "approve", "comment": "photo checked"}
    )
    assert decided.status_code == 303
    page = await browser.get(decided.headers["location"])
    assert "Approved: refund_create ran once and succeeded." in page.text
    async with live.mandate.db.session() as session:
        refunds = (await session.exec(select(Refund))).all()
        approval = await session.get(Approval, approval_id)
    assert len(refunds) == 1 and approval is not None and approval.status == "executed"
    decision = [r for r in await _records(live) if r.tool == "approval_decide"]
    assert decision[0].transport == "console" and decision[0].subject == "agent:supervisor"


async def test_the_requester_cannot_approve_their_own_refund_in_the_console(browser: Browser, live: LiveServer) -> None:
    approval_id = await request_refund(live.harness)
    await browser.log_in(subject="agent:refunds")  # the same person, now with the supervisor's scopes
    csrf = await browser.csrf(f"/console/approvals/{approval_id}")
    refused = await browser.post(f"/console/approvals/{approval_id}/decision", {"csrf": csrf, "decision": "approve"})
    assert refused.status_code == 403 and "self_approval" in refused.text
    async with live.mandate.db.session() as session:
        approval = await session.get(Approval, approval_id)
        assert (await session.exec(select(Refund))).all() == []
    assert approval is not None and approval.status == "pending"


async def test_a_form_posted_without_the_csrf_token_changes_nothing_and_is_audited(
    browser: Browser, live: LiveServer
) -> None:
    approval_id = await request_refund(live.harness)
    await browser.log_in()
    for form in ({"decision": "approve"}, {"decision": "approve", "csrf": "forged"}):
        refused = await browser.post(f"/console/approvals/{approval_id}/decision", form)
        assert refused.status_code == 403 and "CSRF" in refused.text
    async with live.mandate.db.session() as session:
        approval = await session.get(Approval, approval_id)
    assert approval is not None and approval.status == "pending"
    refusals = [r for r in await _records(live) if r.kind == "console" and r.reason_code == "csrf"]
    assert len(refusals) == 2 and refusals[0].subject == "agent:supervisor"


async def test_a_form_from_another_origin_is_refused_even_with_the_token(browser: Browser, live: LiveServer) -> None:
    approval_id = await request_refund(live.harness)
    await browser.log_in()
    csrf = await browser.csrf(f"/console/approvals/{approval_id}")
    refused = await browser.post(
        f"/console/approvals/{approval_id}/decision",
        {"csrf": csrf, "decision": "approve"},
        headers={"Origin": "https://evil.example"},
    )
    assert refused.status_code == 403


async def test_a_person_without_audit_read_is_refused_the_audit_pages(browser: Browser) -> None:
    await browser.log_in(identity="refunds")  # the console asks for approvals:decide audit:read; refunds has neither
    for path in ("/console/audit", "/console/agents", "/console/policy"):
        page = await browser.get(path)
        assert page.status_code == 403 and "audit:read" in page.text
    queue = await browser.get("/console/approvals")
    assert queue.status_code == 403 and "insufficient_scope" in queue.text


async def test_signing_out_ends_the_session_on_the_server(browser: Browser, live: LiveServer) -> None:
    await browser.log_in()
    csrf = await browser.csrf()
    kept = dict(browser.http.cookies)
    out = await browser.post("/console/logout", {"csrf": csrf})
    assert out.status_code == 200 and "Signed out" in out.text
    browser.http.cookies.update(kept)  # replaying the old cookie does not bring the session back
    again = await browser.get("/console/approvals")
    assert again.status_code == 303
    assert [r.outcome for r in await _records(live) if r.kind == "console"] == ["signed_in", "signed_out"]


async def test_agent_text_is_shown_with_its_control_and_bidi_characters_escaped(
    browser: Browser, live: LiveServer
) -> None:
    reason = "broken\u202egnp.exe\x1b[2J"
    arguments = {"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": reason}
    approval_id = await request_refund(live.harness, arguments)
    await browser.log_in()
    page = await browser.get(f"/console/approvals/{approval_id}")
    assert page.status_code == 200
    assert "\u202e" not in page.text and "\x1b" not in page.text
    assert "broken\\u202egnp.exe\\u001b[2J" in page.text
