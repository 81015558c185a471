"""JSON-RPC errors per JSON-RPC 2.0 section 5.1 and MCP 2025-11-25 "Tools": duplicate member names are a parse error
and nothing runs, a body that is not a request object is -32600, an unknown tool is -32602; over HTTP and stdio,
and never with a validator's internals in the message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from sqlmodel import col, func, select

from server.audit.models import AuditRecord
from server.config import Settings
from server.jsonrpc_input import check_message
from tests.conftest import Harness
from tests.live import LiveServer, live_server
from tools.store.models import Refund

pytestmark = pytest.mark.anyio

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
ARGS = '"order_id":"ord_5001","currency":"EUR","reason":"arrived damaged"'
DUPLICATES = {
    "arguments": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund_create","arguments":{'
    + ARGS
    + ',"amount":"1.00","amount":"50.00"}}}',
    "params": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"order_get","arguments":{'
    + ARGS
    + ',"amount":"1.00"},"name":"refund_create"}}',
    "top-level": '{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":'
    '"refund_create","arguments":{' + ARGS + ',"amount":"1.00"}}}',
    "deep": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund_create","arguments":{'
    + ARGS
    + ',"amount":"1.00","x":[{"a":1,"a":2}]}}}',
}
NOT_REQUESTS = ["[]", '[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]', "42", '"tools/call"', "null", '{"id":1}']
INTERNALS = ("validation error", "pydantic", "input_value", "errors.pydantic.dev", "type=")


@pytest.fixture
async def live(tmp_path: Path, database_url: str) -> AsyncIterator[LiveServer]:
    async with live_server(tmp_path / "data", database_url, stateless=True) as server:
        yield server


async def _post(live: LiveServer, body: str, agent: str = "refunds") -> httpx2.Response:
    token = live.harness.token(agent)
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(live.url, content=body.encode(), headers={**HEADERS, "Authorization": f"Bearer {token}"})


async def _refunds(harness: Harness) -> int:
    async with harness.mandate.db.session() as session:
        return (await session.exec(select(func.count()).select_from(Refund))).one()


@pytest.mark.parametrize("where", list(DUPLICATES))
async def test_a_body_with_a_duplicate_member_is_a_parse_error_and_nothing_runs(live: LiveServer, where: str) -> None:
    response = await _post(live, DUPLICATES[where])
    assert response.status_code == 400
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None
    assert body["error"]["code"] == -32700
    assert "more than once" in body["error"]["message"]
    assert await _refunds(live.harness) == 0
    async with live.mandate.db.session() as session:
        record = (await session.exec(select(AuditRecord).where(AuditRecord.reason_code == "parse_error"))).one()
    assert (record.decision, record.outcome, record.client_id) == ("deny", "refused", "refunds-agent")


async def test_the_same_refund_without_the_duplicate_runs(live: LiveServer) -> None:
    # the control for the test above: the body is otherwise a valid call that runs
    body = DUPLICATES["arguments"].replace(',"amount":"50.00"', "")
    response = await _post(live, body)
    assert response.status_code == 200, response.text
    assert await _refunds(live.harness) == 1


@pytest.mark.parametrize("body", NOT_REQUESTS)
async def test_a_body_that_is_not_a_request_object_is_an_invalid_request(live: LiveServer, body: str) -> None:
    response = await _post(live, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == -32600
    assert not any(word in error["message"].lower() for word in INTERNALS), error["message"]


@pytest.mark.parametrize("body", ['{"jsonrpc":"2.0","id":1,"method":"tools/call"', '{"a":NaN}', "\xff"])
async def test_text_that_is_not_json_is_a_parse_error_without_parser_internals(live: LiveServer, body: str) -> None:
    token = live.harness.token("refunds")
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(
            live.url, content=body.encode("latin-1"), headers={**HEADERS, "Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": -32700,
        "message": "Parse error: the message is not valid JSON, so nothing was done",
    }


async def test_an_unknown_tool_is_the_json_rpc_error_the_mcp_spec_names_and_is_recorded(live: LiveServer) -> None:
    async with live.client(live.harness.token("refunds")) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("no_such_tool", {})
    assert raised.value.error.code == -32602
    assert raised.value.error.message == "Unknown tool: no_such_tool"
    async with live.mandate.db.session() as session:
        record = (await session.exec(select(AuditRecord).where(col(AuditRecord.tool) == "no_such_tool"))).one()
    assert (record.decision, record.outcome, record.reason_code) == ("deny", "refused", "unknown_tool")


def test_every_duplicate_example_is_refused_and_its_unique_twin_accepted() -> None:
    for body in DUPLICATES.values():
        problem = check_message(body)
        assert problem is not None and problem.code == -32700
    assert check_message('{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"a":{"b":1},"c":{"b":2}}}') is None


MANDATE = str(Path(sys.executable).with_name("mandate"))


async def test_over_stdio_a_duplicate_member_is_answered_with_a_parse_error_and_nothing_runs(
    harness: Harness, settings: Settings, tmp_path: Path
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(settings.data_dir),
        "MANDATE_DATA_DIR": str(settings.data_dir),
        "MANDATE_DATABASE_URL": settings.effective_database_url,
        "MANDATE_DEV_ISSUER": "1",
        "MANDATE_TOKEN": harness.token("refunds"),
    }
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    lines = [
        json.dumps(initialize),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        DUPLICATES["arguments"],
        "[1]",
    ]
    with anyio.fail_after(120):
        process = await anyio.run_process(
            [MANDATE, "serve", "--transport", "stdio"],
            input=("\n".join(lines) + "\n").encode(),
            env=env,
            check=False,
            stderr=subprocess.PIPE,
        )
    answers = [json.loads(line) for line in process.stdout.decode().splitlines()]
    errors = [answer["error"] for answer in answers if "error" in answer]
    assert [error["code"] for error in errors] == [-32700, -32600], answers
    assert answers[0]["id"] == 0 and "result" in answers[0]
    assert await _refunds(harness) == 0
