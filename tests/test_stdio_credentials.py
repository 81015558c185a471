"""A long-running stdio server keeps working past a token's hour: a token file read per request, or (development
only) ``--dev-agent NAME`` minting the agent's short-lived tokens itself."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from server.auth.dev_agent import RENEW_BEFORE_SECONDS, TOKEN_LIFETIME, DevAgentCredentials
from server.auth.dev_issuer import DevIssuer
from server.cli import main
from server.config import Settings
from tests.conftest import Harness

# A transport's or the command line's behaviour, the same on both engines (the storage under it is tested on
# both elsewhere): the PostgreSQL pass deselects it (tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.engine_independent]

MANDATE = str(Path(sys.executable).with_name("mandate"))


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(settings.data_dir),
        "MANDATE_DATA_DIR": str(settings.data_dir),
        "MANDATE_DATABASE_URL": settings.effective_database_url,
        "MANDATE_PORT": str(settings.port),
        **extra,
    }


async def test_a_dev_agent_stdio_server_needs_no_pasted_token_and_serves_the_agents_tools(
    harness: Harness, settings: Settings, tmp_path: Path
) -> None:
    errlog = tmp_path / "stderr.log"
    parameters = StdioServerParameters(
        command=MANDATE,
        args=["serve", "--transport", "stdio", "--dev-issuer", "--dev-agent", "refunds"],
        env=_env(settings),
    )
    with errlog.open("w") as err:
        async with Client(stdio_client(parameters, errlog=err), mode="legacy") as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            order = await client.call_tool("order_get", {"order_id": "ord_5001"})
    said = errlog.read_text()
    assert "DEVELOPMENT ONLY" in said and "serving stdio for refunds-agent" in said
    assert "refund_create" in names and "order_cancel" not in names
    assert not order.is_error


async def test_a_dev_agent_token_is_renewed_before_it_expires_and_is_verified_each_time(harness: Harness) -> None:
    settings = harness.mandate.settings
    issuer = DevIssuer.load_or_create(settings.data_dir, settings.dev_issuer_url)
    now = [1_000_000_000.0]
    credentials = DevAgentCredentials(
        issuer,
        harness.mandate.verifier,
        agent="support",
        scopes=["customers:read"],
        audience=settings.audience,
        clock=lambda: now[0],
    )
    first = credentials.token()
    now[0] += TOKEN_LIFETIME.total_seconds() - RENEW_BEFORE_SECONDS - 1
    assert credentials.token() == first
    now[0] += 2
    assert credentials.token() != first  # renewed two minutes before the old one expires
    principal = await credentials.principal()  # a real token, checked by the real verifier
    assert (principal.client_id, principal.scopes) == ("support-agent", frozenset({"customers:read"}))


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["serve", "--transport", "stdio", "--dev-agent", "support"], "--dev-agent needs the development issuer"),
        (["serve", "--dev-issuer", "--dev-agent", "support"], "--dev-agent is for --transport stdio"),
        (["serve", "--transport", "stdio", "--dev-issuer", "--dev-agent", "nobody"], "unknown agent 'nobody'"),
    ],
)
def test_dev_agent_misuse_is_refused_before_anything_starts(
    argv: list[str], said: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable in ("MANDATE_CONFIG", "MANDATE_DEV_ISSUER", "MANDATE_ISSUER"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MANDATE_DATA_DIR", str(tmp_path / "data"))
    if "--dev-issuer" not in argv:
        monkeypatch.setenv("MANDATE_ISSUER", "https://auth.example.com/")
    assert main(argv) == 2
    assert said in capsys.readouterr().err


async def test_a_token_file_is_read_again_on_every_request(
    harness: Harness, settings: Settings, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(harness.token("support") + "\n")
    parameters = StdioServerParameters(
        command=MANDATE,
        args=["serve", "--transport", "stdio"],
        env=_env(settings, MANDATE_DEV_ISSUER="1", MANDATE_TOKEN_FILE=str(token_file)),
    )
    with (tmp_path / "stderr.log").open("w") as err:
        async with Client(stdio_client(parameters, errlog=err), mode="legacy") as client:
            before = {tool.name for tool in (await client.list_tools()).tools}
            token_file.write_text(harness.token("refunds"))  # what a token refresher does
            after = {tool.name for tool in (await client.list_tools()).tools}
            token_file.unlink()
            gone = await client.call_tool("orders_list", {"customer_id": "cus_1001"})
    assert "refund_create" not in before
    assert "refund_create" in after
    assert gone.is_error and gone.structured_content is not None
    assert gone.structured_content["code"] == "authentication_required"
