"""The console in a real browser (Debian's Chromium through chromium-driver and Selenium): log in through the
development authorization server, approve a pending refund and follow it to its effect and audit record, be
refused as the requester, and be refused on a forged form without the CSRF token.

Selenium's calls block, so each scenario runs in a worker thread while the live server serves on the event loop.
Screenshots go to ``$MANDATE_SCREENSHOTS`` when it is set (``make screenshots`` writes docs/console/), otherwise to
the test's temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlmodel import select

from server.approvals import Approval
from tests.console import chromium
from tests.console.helpers import request_refund
from tests.live import LiveServer
from tools.store.models import Refund

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.browser,
    pytest.mark.skipif(
        chromium.missing() is not None and not os.environ.get("MANDATE_REQUIRE_BROWSER"),
        reason=chromium.missing() or "",
    ),
]


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MANDATE_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _shot(driver: Any, folder: Path, name: str) -> None:
    """The whole page (up to 2,400 CSS pixels tall), at the window's width."""
    size = driver.get_window_size()
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(size["width"], min(max(height + 140, size["height"]), 2400))
    path = folder / f"{name}.png"
    try:
        assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    finally:
        driver.set_window_size(size["width"], size["height"])


def _wait_for(driver: Any, css: str, text: str | None = None) -> Any:
    """The element once the page that has it has loaded (a click on a submit button does not wait for the next page)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    wait = WebDriverWait(driver, 30)
    if text is not None:
        wait.until(expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
    return wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def _log_in(
    driver: Any, live: LiveServer, subject: str = "", identity: str = "supervisor", shots: Path | None = None
) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{live.base_url}/console/approvals")
    assert "Development sign-in" in driver.title, driver.page_source  # redirected to the dev authorization page
    if shots is not None:
        _shot(driver, shots, "dev-sign-in")
    driver.find_element(By.CSS_SELECTOR, f'input[name="identity"][value="{identity}"]').click()
    if subject:
        driver.find_element(By.ID, "subject").send_keys(subject)
    driver.find_element(By.CSS_SELECTOR, 'button[value="allow"]').click()
    _wait_for(driver, ".who")
    assert driver.current_url == f"{live.base_url}/console/approvals", driver.page_source
    assert (subject or f"agent:{identity}") in driver.find_element(By.CSS_SELECTOR, ".who").text


async def test_a_supervisor_logs_in_approves_a_refund_and_follows_it_to_its_audit_record(
    live: LiveServer, tmp_path: Path
) -> None:
    approval_id = await request_refund(live.harness)
    await request_refund(
        live.harness, {"order_id": "ord_5005", "amount": "200.00", "currency": "USD", "reason": "a leg arrived bent"}
    )
    shots = _shots(tmp_path)

    def scenario() -> None:
        from selenium.webdriver.common.by import By

        with chromium.chromium(tmp_path / "profile") as driver:
            _log_in(driver, live, shots=shots)
            assert approval_id in driver.page_source and "ord_5002" in driver.page_source
            _shot(driver, shots, "approvals")
            driver.find_element(By.CSS_SELECTOR, f'a[href="/console/approvals/{approval_id}"]').click()
            assert '"amount": "150.00"' in _wait_for(driver, "pre.json").text
            _shot(driver, shots, "approval")
            driver.find_element(By.ID, "comment").send_keys("Photo of the broken monitor checked")
            driver.find_element(By.CSS_SELECTOR, 'button[value="approve"]').click()
            flash = _wait_for(driver, ".flash").text
            assert flash == "Approved: refund_create ran once and succeeded.", driver.page_source
            run = 'section[aria-labelledby="dec"] a[href^="/console/audit/records/"]'  # the executed action's record
            driver.find_element(By.CSS_SELECTOR, run).click()
            lineage = _wait_for(driver, "ol.lineage").text
            assert "Effect: refund" in lineage and "150.00" in lineage and approval_id in lineage
            _shot(driver, shots, "audit-record")
            driver.get(f"{live.base_url}/console/audit")
            driver.find_element(By.CSS_SELECTOR, ".chain button").click()
            assert "The log verifies" in _wait_for(driver, ".chain [role=status]").text
            driver.get(f"{live.base_url}/console/audit")
            _shot(driver, shots, "audit")
            driver.get(f"{live.base_url}/console/agents")
            assert "refunds-agent" in driver.page_source
            _shot(driver, shots, "agents")
            driver.get(f"{live.base_url}/console/policy")
            driver.find_element(By.CSS_SELECTOR, '#agent option[value="refunds"]').click()
            driver.find_element(By.CSS_SELECTOR, ".explain button").click()
            assert "approval" in _wait_for(driver, ".report").text
            _shot(driver, shots, "policy")
        with chromium.chromium(tmp_path / "phone", width=390, height=844) as phone:
            _log_in(phone, live)
            assert phone.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
            _shot(phone, shots, "approvals-phone")

    await anyio.to_thread.run_sync(scenario)
    async with live.mandate.db.session() as session:
        approval = await session.get(Approval, approval_id)
        refunds = (await session.exec(select(Refund))).all()
    assert approval is not None and approval.status == "executed" and approval.decided_by_subject == "agent:supervisor"
    assert [r.amount_minor for r in refunds] == [15000]


async def test_the_requester_is_refused_when_approving_their_own_refund(live: LiveServer, tmp_path: Path) -> None:
    approval_id = await request_refund(live.harness)

    def scenario() -> str:
        from selenium.webdriver.common.by import By

        with chromium.chromium(tmp_path / "profile") as driver:
            _log_in(driver, live, subject="agent:refunds")
            driver.get(f"{live.base_url}/console/approvals/{approval_id}")
            driver.find_element(By.CSS_SELECTOR, 'button[value="approve"]').click()
            return str(_wait_for(driver, "p.problem[role=alert]").text)

    alert = await anyio.to_thread.run_sync(scenario)
    assert "self_approval" in alert and "separation of duties" in alert
    async with live.mandate.db.session() as session:
        approval = await session.get(Approval, approval_id)
    assert approval is not None and approval.status == "pending"


async def test_a_forged_form_without_the_csrf_token_is_refused(live: LiveServer, tmp_path: Path) -> None:
    approval_id = await request_refund(live.harness)

    def scenario() -> tuple[str, str]:
        from selenium.webdriver.common.by import By

        with chromium.chromium(tmp_path / "profile") as driver:
            _log_in(driver, live)
            driver.get(f"{live.base_url}/console/approvals/{approval_id}")
            driver.execute_script("document.querySelector('form.decide input[name=csrf]').remove()")
            driver.find_element(By.CSS_SELECTOR, 'button[value="approve"]').click()
            return str(_wait_for(driver, "h1", "Form refused").text), str(driver.page_source)

    heading, page = await anyio.to_thread.run_sync(scenario)
    assert heading == "Form refused" and "CSRF" in page
    async with live.mandate.db.session() as session:
        approval = await session.get(Approval, approval_id)
        assert (await session.exec(select(Refund))).all() == []
    assert approval is not None and approval.status == "pending"
