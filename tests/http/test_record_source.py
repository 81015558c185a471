"""Every audit record names its source: Origin, remote address, User-Agent, and the client's name and version, on
the stateless transport (clientInfo remembered from initialize per token), the stateful one, and 2026-07-28 (per
request _meta)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import Implementation
from sqlmodel import col, select

from server.audit.models import AuditRecord
from tests.live import LiveServer, live_server

pytestmark = pytest.mark.anyio

AGENT = Implementation(name="probe-agent", version="4.2.1")


@pytest.fixture(params=["stateless", "stateful"])
async def live(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> AsyncIterator[LiveServer]:
    async with live_server(tmp_path / "data", database_url, stateless=request.param == "stateless") as server:
        yield server


async def _call_records(live: LiveServer) -> list[AuditRecord]:
    async with live.mandate.db.session() as session:
        query = select(AuditRecord).where(col(AuditRecord.tool) == "orders_list").order_by(col(AuditRecord.seq))
        return list((await session.exec(query)).all())


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_call_record_names_origin_address_user_agent_and_client(live: LiveServer, mode: str) -> None:
    origin = live.base_url
    headers = {
        "Authorization": f"Bearer {live.harness.token('support')}",
        "Origin": origin,
        "User-Agent": "probe-http/1.0",
    }
    async with (
        httpx2.AsyncClient(headers=headers, timeout=10) as http,
        Client(streamable_http_client(live.url, http_client=http), client_info=AGENT, mode=mode) as client,  # type: ignore[arg-type]
    ):
        result = await client.call_tool("orders_list", {"customer_id": "cus_1001"})
    assert not result.is_error, result.content
    (record,) = await _call_records(live)
    assert record.origin == origin
    assert record.user_agent == "probe-http/1.0"
    assert record.client_address == "127.0.0.1"
    assert (record.client_name, record.client_version) == ("probe-agent", "4.2.1")


async def test_without_initialize_the_record_says_nothing_about_the_client_rather_than_guessing(
    live: LiveServer,
) -> None:
    token = live.harness.token("support")
    async with live.client(token) as client:  # another token's initialize names another client
        await client.list_tools()
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(
            live.url,
            content=b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"orders_list",'
            b'"arguments":{"customer_id":"cus_1001"}}}',
            headers={
                "Authorization": f"Bearer {live.harness.token('support')}",
                "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json",
                "Mcp-Protocol-Version": "2025-11-25",
            },
        )
    if live.mandate.settings.stateless:
        assert response.status_code == 200, response.text
        (record,) = await _call_records(live)
        assert (record.client_name, record.client_version, record.origin) == (None, None, None)
        assert record.user_agent is not None  # httpx names itself
