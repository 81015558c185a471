"""``mandate serve --transport stdio``: the token comes from MANDATE_TOKEN and is verified exactly as over HTTP."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from server.config import Settings
from tests.conftest import Harness

# A transport's or the command line's behaviour, the same on both engines (the storage under it is tested on
# both elsewhere): the PostgreSQL pass deselects it (tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.engine_independent]

MANDATE = str(Path(sys.executable).with_name("mandate"))


def _parameters(settings: Settings, token: str | None) -> StdioServerParameters:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(settings.data_dir),
        "MANDATE_DATA_DIR": str(settings.data_dir),
        "MANDATE_DATABASE_URL": settings.effective_database_url,
        "MANDATE_DEV_ISSUER": "1",
        "MANDATE_PORT": str(settings.port),
    }
    if token is not None:
        env["MANDATE_TOKEN"] = token
    return StdioServerParameters(command=MANDATE, args=["serve", "--transport", "stdio"], env=env)


async def test_a_stdio_session_lists_and_calls_within_the_token_scopes(
    harness: Harness, settings: Settings, tmp_path: Path
) -> None:
    errlog = tmp_path / "stderr.log"
    with errlog.open("w") as err:
        transport = stdio_client(_parameters(settings, harness.token("refunds")), errlog=err)
        async with Client(transport, mode="legacy") as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            allowed = await client.call_tool("order_get", {"order_id": "ord_5001"})
            refused = await client.call_tool("order_cancel", {"order_id": "ord_5001", "reason": "changed mind"})
    assert "serving stdio for refunds-agent" in errlog.read_text()
    assert names == ["approval_status", "customer_lookup", "order_get", "orders_list", "refund_create"]
    assert not allowed.is_error
    assert refused.is_error
    assert refused.structured_content is not None
    assert refused.structured_content["code"] == "insufficient_scope"
    assert "orders:cancel" in refused.structured_content["message"]


@pytest.mark.parametrize("token", [None, "not-a-token"])
async def test_without_a_valid_token_stdio_serves_no_tools(
    harness: Harness, settings: Settings, tmp_path: Path, token: str | None
) -> None:
    errlog = tmp_path / "stderr.log"
    with errlog.open("w") as err:
        async with Client(stdio_client(_parameters(settings, token), errlog=err), mode="legacy") as client:
            tools = (await client.list_tools()).tools
            result = await client.call_tool("orders_list", {"customer_id": "cus_1001"})
    said = errlog.read_text()
    assert "no tools will be served" in said
    assert ("MANDATE_TOKEN" in said) if token is None else ("not-a-token" not in said)
    assert tools == []
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["code"] == "authentication_required"
