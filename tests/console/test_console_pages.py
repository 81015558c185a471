"""The investigation pages over real HTTP: the audit browser (filters, a record, lineage, the latest signed tree
head, verification against the newest signed file),
agents, and the policy with its explain form."""

from __future__ import annotations

import json
import re

import anyio
import pytest
from sqlalchemy import func, select, update

from server.audit.chain import RECORDS
from server.audit.checkpoint import default_key_path, load_or_create_signing_key, sign_tree_head, write_checkpoint
from server.audit.tree import HEADS
from tests.audit.support import drop_audit_triggers
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


async def _signed_head(live: LiveServer) -> tuple[int, str]:
    """Once the live server's sequencer has integrated everything so far and signed it: the size and root."""
    db = live.harness.mandate.db
    query = select(HEADS.c.size, HEADS.c.root_hash).where(HEADS.c.signed.is_not(None)).order_by(HEADS.c.size.desc())
    pending = select(func.count()).select_from(RECORDS).where(RECORDS.c.leaf_index.is_(None))
    with anyio.fail_after(60):  # the sequencer integrates and signs every 0.5 s
        while True:
            async with db.engine.connect() as connection:
                row = (await connection.execute(query.limit(1))).first()
                waiting = (await connection.execute(pending)).scalar_one()
            if row is not None and not waiting:
                return int(row.size), str(row.root_hash)
            await anyio.sleep(0.1)


async def test_the_audit_page_shows_the_latest_signed_tree_head_with_its_signature_checked(
    browser: Browser, live: LiveServer
) -> None:
    await request_refund(live.harness)
    await browser.log_in()
    size, root = await _signed_head(live)
    page = await browser.get("/console/audit")
    assert page.status_code == 200
    panel = page.text[page.text.index('class="tree-head"') :][:600]
    assert f"size <strong>{size}</strong>" in panel and root[:16] in panel
    assert "signature valid" in panel
    assert "none written yet (mandate audit checkpoint)" in page.text


async def test_a_signed_tree_head_altered_in_the_database_is_shown_as_failing_its_signature(
    browser: Browser, live: LiveServer
) -> None:
    await browser.log_in()
    size, _ = await _signed_head(live)
    db = live.harness.mandate.db
    await drop_audit_triggers(db)
    async with db.engine.begin() as connection:
        signed = (await connection.execute(select(HEADS.c.signed).where(HEADS.c.size == size))).scalar_one()
        forged = {**json.loads(signed), "root_hash": "ab" * 32}
        await connection.execute(
            update(HEADS).where(HEADS.c.size == size).values(root_hash="ab" * 32, signed=json.dumps(forged))
        )
    page = await browser.get("/console/audit")
    panel = page.text[page.text.index('class="tree-head"') :][:600]
    assert f"the tree head of size {size}: the signature does not verify" in panel
    assert "signature valid" not in panel


async def test_verifying_checks_the_log_against_the_newest_signed_tree_head_file(
    browser: Browser, live: LiveServer
) -> None:
    await browser.log_in()
    size, root = await _signed_head(live)
    settings = live.harness.mandate.settings
    key, _ = load_or_create_signing_key(default_key_path(settings.data_dir))
    folder = settings.data_dir / "audit-checkpoints"
    write_checkpoint(
        folder / f"tree-head-{size:012d}.json", sign_tree_head(key, size=size, root_hash=root, instance="t")
    )
    csrf = await browser.csrf("/console/audit")
    page = await browser.post("/console/audit/verify", {"csrf": csrf})
    assert page.status_code == 200 and "The log verifies:" in page.text
    assert f"extending the signed tree head of size {size} by a verified consistency proof" in page.text
    assert f"tree-head-{size:012d}.json (size {size}, signed" in page.text


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
