"""`mandate dev` on a port other than 8000: the printed next steps work as printed, and the log stays quiet."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import anyio
import httpx2
import pytest

from server.auth import dev_issuer
from tests.examples_loader import load_example
from tests.live import bound_socket

# A transport's or the command line's behaviour, the same on both engines (the storage under it is tested on
# both elsewhere): the PostgreSQL pass deselects it (tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.engine_independent]

MANDATE = str(Path(sys.executable).with_name("mandate"))


async def _wait_healthy(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    async with httpx2.AsyncClient() as http:
        with anyio.fail_after(60):
            while True:
                assert process.poll() is None, f"the server exited; its output is in {log}"
                try:
                    if (await http.get(f"{base}/healthz")).status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                await anyio.sleep(0.1)


async def test_on_another_port_the_printed_mint_command_gives_a_token_this_server_accepts(
    tmp_path: Path, database_url: str
) -> None:
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    clean = {key: value for key, value in os.environ.items() if not key.startswith("MANDATE_")}
    data_dir = str(tmp_path / "data")
    server_env = {
        **clean,
        "MANDATE_DATA_DIR": data_dir,
        "MANDATE_DATABASE_URL": database_url,
        "MANDATE_PORT": str(port),
    }
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([MANDATE, "dev"], env=server_env, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
        try:
            base = f"http://127.0.0.1:{port}"
            await _wait_healthy(process, base, log)
            hint = next(line for line in log.read_text().splitlines() if "mandate token mint" in line)
            words = shlex.split(hint)
            argv = words[words.index("mandate") + 1 :]
            assert argv[:3] == ["token", "mint", "--agent"]
            # Terminal 2 has the data directory the hint names, but not the server's MANDATE_PORT.
            assign = [w.split("=", 1) for w in words[: words.index("mandate")] if "=" in w]
            minted = await anyio.run_process([MANDATE, *argv], env={**clean, **dict(assign)})
            token = minted.stdout.decode().strip()
            seen = await load_example("client_session").session(f"{base}/mcp", token)
            seen_again = await load_example("client_session").session(f"{base}/mcp", token)
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert f"--port {port}" in hint
    assert "refund_create" in seen["tools"] and seen_again["tools"] == seen["tools"]
    printed = log.read_text()
    assert f"npx -y --loglevel=error @modelcontextprotocol/inspector@2.12.0 --cli {base}/mcp" in printed
    assert " INFO server.policy_runtime: policy " in printed  # the server keeps its own INFO log
    assert "Terminating session" not in printed
    assert "HTTP Request:" not in printed  # httpx's per-request INFO lines
    assert token not in printed


async def test_the_example_client_says_401_and_token_expired_in_one_line(tmp_path: Path, database_url: str) -> None:
    from tests.live import live_server

    async with live_server(tmp_path / "data", database_url) as server:
        settings = server.mandate.settings
        issuer = dev_issuer.DevIssuer.load_or_create(settings.data_dir, settings.dev_issuer_url)
        two_hours_ago = mock.Mock(time=mock.Mock(return_value=time.time() - 7200))
        with mock.patch.object(dev_issuer, "time", two_hours_ago):
            expired = issuer.mint(
                subject="agent:refunds", client_id="refunds-agent", scopes=["orders:read"], audience=settings.audience
            )
        example = load_example("client_session")
        with pytest.raises(example.Refused) as refused:
            await example.session(server.url, expired)
    assert str(refused.value) == "HTTP 401: token expired"
