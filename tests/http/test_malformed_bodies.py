"""The bearer guard reads the JSON-RPC body to answer step-up 403s; a body it cannot parse is the SDK's to refuse."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest

from tests.live import LiveServer, live_server

pytestmark = pytest.mark.anyio

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
async def live(tmp_path: Path, database_url: str) -> AsyncIterator[LiveServer]:
    async with live_server(tmp_path / "data", database_url, stateless=True) as server:
        yield server


@pytest.mark.parametrize(
    "body",
    [
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"order_get","arguments":'
        + "[" * 100_000
        + "]" * 100_000
        + "}}",
        '{"jsonrpc":"2.0","id":1,"method":"tools/call"',
        "\xff\xfe not json",
    ],
    ids=["nested-past-the-parser-depth", "truncated", "not-utf8"],
)
async def test_a_body_that_cannot_be_parsed_is_a_client_error_never_a_server_error(live: LiveServer, body: str) -> None:
    token = live.harness.token("support")
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(
            live.url, content=body.encode("latin-1"), headers={**HEADERS, "Authorization": f"Bearer {token}"}
        )
    assert 400 <= response.status_code < 500
