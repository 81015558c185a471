"""The examples run, so they cannot rot: the custom tool, the HTTP client session, the stdio session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from server.config import Settings
from tests.conftest import Harness
from tests.examples_loader import EXAMPLES
from tests.examples_loader import load_example as _load
from tests.live import live_server

# A transport's or the command line's behaviour, the same on both engines (the storage under it is tested on
# both elsewhere): the PostgreSQL pass deselects it (tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.engine_independent]


async def test_the_custom_tool_appears_only_for_tokens_with_its_scope() -> None:
    seen = await _load("custom_tool").main()
    assert "shipping_eta" in seen[0]
    assert "shipping_eta" not in seen[1]


async def test_the_client_session_example_lists_reads_and_refunds(tmp_path: Path, database_url: str) -> None:
    async with live_server(tmp_path / "data", database_url) as live:
        seen = await _load("client_session").session(live.url, live.harness.token("refunds"))
    assert "refund_create" in seen["tools"]
    assert seen["orders"]["customer_id"] == "cus_1001"
    assert seen["refund"]["amount"] == "9.99"


async def test_the_stdio_session_example_lists_the_tokens_tools(harness: Harness, settings: Settings) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "MANDATE_DATA_DIR": str(settings.data_dir),
        "MANDATE_DATABASE_URL": settings.effective_database_url,
        "MANDATE_DEV_ISSUER": "1",
        "MANDATE_TOKEN": harness.token("support"),
    }
    tools = await _load("stdio_session").session(env)
    assert tools == ["customer_lookup", "order_get", "orders_list"]


def test_the_desktop_client_config_is_valid_json_naming_the_stdio_command() -> None:
    config = json.loads((EXAMPLES / "desktop-client-config.json").read_text())
    assert config["mcpServers"]["mandate"]["args"] == [
        "serve",
        "--transport",
        "stdio",
        "--dev-issuer",
        "--dev-agent",
        "support",
    ]
    assert "MANDATE_TOKEN" not in config["mcpServers"]["mandate"]["env"]  # nothing that expires in an hour
    assert config["mcpServers"]["mandate-token-file"]["env"]["MANDATE_TOKEN_FILE"]
    assert config["mcpServers"]["mandate-http"]["url"] == "http://127.0.0.1:8000/mcp"
