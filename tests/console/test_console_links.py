"""An approval can be reached from where it was requested: the webhook carries the console URL of the approval,
and a client on 2026-07-28 that takes URL-mode elicitation is offered that page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
from sqlmodel import col, select

from server.approvals import Approval
from server.config import Settings
from server.webhooks import WebhookMessage
from tests.approvals.test_notifications import _notifying, _request
from tests.conftest import Harness
from tests.console.helpers import BIG_REFUND
from tests.live import live_server
from tools.store.models import Refund

pytestmark = pytest.mark.anyio


async def _bodies(harness: Harness) -> list[dict[str, object]]:
    async with harness.mandate.db.session() as session:
        rows = (await session.exec(select(WebhookMessage).order_by(col(WebhookMessage.created_at)))).all()
    return [json.loads(row.body)["data"] for row in rows]


async def test_the_webhook_names_the_console_page_of_the_approval(settings: Settings) -> None:
    async with _notifying(settings, "http://127.0.0.1:9/hook") as harness:
        approval_id = await _request(harness)
        [created] = await _bodies(harness)
    assert created["console_url"] == f"http://127.0.0.1:{settings.port}/console/approvals/{approval_id}"


async def test_without_the_console_the_webhook_has_no_console_link(settings: Settings) -> None:
    off = settings.console.model_copy(update={"enabled": False})
    async with _notifying(settings, "http://127.0.0.1:9/hook", console=off) as harness:
        await _request(harness)
        [created] = await _bodies(harness)
    assert "console_url" not in created


async def test_a_2026_client_that_takes_url_elicitation_is_sent_to_the_approvals_console_page(
    tmp_path: Path, database_url: str
) -> None:
    offered: list[types.ElicitRequestParams] = []

    async def elicit(_context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        offered.append(params)
        return types.ElicitResult(action="accept")

    async with live_server(tmp_path / "data", database_url) as live:
        token = live.harness.token("refunds")
        async with live.client(token, mode="auto", elicitation_callback=elicit) as client:
            result = await client.call_tool("refund_create", BIG_REFUND)
        async with live.client(token, mode="auto") as plain:  # no elicitation capability: the plain answer
            again = await plain.call_tool("refund_create", BIG_REFUND)
        async with live.mandate.db.session() as session:
            approvals = (await session.exec(select(Approval))).all()
    assert len(approvals) == 1  # the retry found the same open approval
    [params] = offered
    assert isinstance(params, types.ElicitRequestURLParams)
    assert params.url == f"{live.base_url}/console/approvals/{approvals[0].id}"
    assert result.structured_content is not None and result.structured_content["status"] == "pending_approval"
    assert result.structured_content["approval_id"] == approvals[0].id
    assert again.structured_content is not None and again.structured_content["status"] == "pending_approval"


async def test_a_retry_after_the_person_approved_gets_the_refund_and_never_asks_for_another(
    tmp_path: Path, database_url: str
) -> None:
    async with live_server(tmp_path / "data", database_url) as live:
        supervisor = live.harness.token("supervisor", subject="human:alice")

        async def elicit(_context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            assert isinstance(params, types.ElicitRequestURLParams)
            approval_id = params.url.rsplit("/", 1)[-1]
            async with httpx2.AsyncClient() as http:  # the person opened the page and approved
                decided = await http.post(
                    f"{live.base_url}/api/approvals/{approval_id}/decision",
                    json={"decision": "approve"},
                    headers={"Authorization": f"Bearer {supervisor}"},
                )
            assert decided.status_code == 200, decided.text
            return types.ElicitResult(action="accept")

        async with live.client(live.harness.token("refunds"), mode="auto", elicitation_callback=elicit) as client:
            result = await client.call_tool("refund_create", BIG_REFUND)
        async with live.mandate.db.session() as session:
            approvals = (await session.exec(select(Approval))).all()
            refunds = (await session.exec(select(Refund))).all()
    assert len(approvals) == 1 and approvals[0].status == "executed" and len(refunds) == 1
    assert result.structured_content is not None and result.structured_content["refund_id"] == refunds[0].id
