"""The README quickstart, as a user runs it: ``mandate dev`` seeds and serves, ``mandate token mint`` gives a token,
and a real MCP client connects with it. (``make run`` is ``uv sync`` and then exactly this command.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.examples_loader import load_example
from tests.live import bound_socket

# A transport's or the command line's behaviour, the same on both engines (the storage under it is tested on
# both elsewhere): the PostgreSQL pass deselects it (tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.engine_independent]

MANDATE = str(Path(sys.executable).with_name("mandate"))


async def test_the_quickstart_serves_the_demo_store_to_a_minted_token(tmp_path: Path, database_url: str) -> None:
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {
        **os.environ,
        "MANDATE_DATA_DIR": str(tmp_path / "data"),
        "MANDATE_DATABASE_URL": database_url,
        "MANDATE_PORT": str(port),
    }
    env.pop("MANDATE_CONFIG", None)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        # The server runs beside the test: Popen returns at once and the test polls /healthz without blocking.
        process = subprocess.Popen([MANDATE, "dev"], env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx2.AsyncClient() as http:
                with anyio.fail_after(120):  # a process start is slow on a loaded machine
                    while True:
                        assert process.poll() is None, log.read_text()
                        try:
                            if (await http.get(f"{base}/healthz")).status_code == 200:
                                break
                        except httpx2.TransportError:
                            pass
                        await anyio.sleep(0.1)
            minted = await anyio.run_process([MANDATE, "token", "mint", "--agent", "refunds"], env=env)
            token = minted.stdout.decode().strip()
            seen = await load_example("client_session").session(f"{base}/mcp", token)
        finally:
            process.terminate()
            process.wait(timeout=10)
    printed = log.read_text()
    assert "DEVELOPMENT ONLY" in printed
    assert "mandate token mint --agent refunds" in printed
    assert f"http://127.0.0.1:{port}/mcp" in printed
    assert token not in printed
    assert seen["tools"] == ["approval_status", "customer_lookup", "order_get", "orders_list", "refund_create"]
    assert seen["refund"]["amount"] == "9.99"
