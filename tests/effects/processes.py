"""Real ``mandate`` processes for the crash tests: ``mandate serve`` on a free port, ``mandate seed``, ``mandate
audit verify``, ``mandate effects ...``, each with the test's database, data directory and payments provider given
through the environment exactly as an operator would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx2
from anyio.abc import Process
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from server.auth.dev_issuer import DevIssuer
from server.config import PaymentsSettings
from tests.conftest import AGENT_SCOPES

MANDATE = str(Path(sys.executable).with_name("mandate"))
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(
    *,
    data_dir: Path,
    database_url: str,
    payments: PaymentsSettings | None,
    port: int = 8000,
    fault: str | None = None,
    lease: float = 2.0,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(data_dir),
        "MANDATE_DATA_DIR": str(data_dir),
        "MANDATE_DATABASE_URL": database_url,
        "MANDATE_DEV_ISSUER": "1",
        "MANDATE_PORT": str(port),
        "MANDATE_INSTANCE": f"replica-{port}",
        "MANDATE_LOG_LEVEL": "WARNING",
        "MANDATE_EFFECTS_LEASE_SECONDS": str(lease),
        "MANDATE_EFFECTS_RECONCILE_INTERVAL_SECONDS": "0.2",
        "MANDATE_BACKGROUND_INTERVAL_SECONDS": "0.5",
    }
    if payments is not None:
        assert payments.api_key is not None and payments.api_base is not None
        env["MANDATE_STRIPE_API_KEY"] = payments.api_key.get_secret_value()
        env["MANDATE_STRIPE_API_BASE"] = payments.api_base
        env["MANDATE_PAYMENTS_TIMEOUT_SECONDS"] = str(payments.timeout_seconds)
    if fault is not None:
        env["MANDATE_FAULT_POINT"] = fault
    env.update(extra or {})
    return env


async def run(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    """One ``mandate`` command to its end (generous deadline: a loaded machine starts Python slowly)."""
    with anyio.fail_after(120):
        return await anyio.run_process([MANDATE, *args], env=dict(env), cwd=ROOT, check=False)


@dataclass
class Served:
    process: Process
    port: int
    data_dir: Path
    public_url: str | None = None
    """``MANDATE_PUBLIC_URL`` when replicas share one (behind a load balancer): the issuer and audience tokens name."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def token(self, agent: str = "refunds") -> str:
        base = self.public_url or f"http://127.0.0.1:{self.port}"
        issuer = DevIssuer.load_or_create(self.data_dir, f"{base}/dev-issuer")
        return issuer.mint(
            subject=f"agent:{agent}",
            client_id=f"{agent}-agent",
            scopes=AGENT_SCOPES[agent],
            audience=f"{base}/mcp",
            ttl=timedelta(minutes=10),
        )

    async def call(self, tool: str, arguments: dict[str, Any], agent: str = "refunds") -> Any:
        headers = {"Authorization": f"Bearer {self.token(agent)}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(streamable_http_client(self.url, http_client=http)) as client,
        ):
            return await client.call_tool(tool, arguments)

    async def died(self) -> int:
        """Wait for the process to end (it kills itself at an armed fault point); its return code."""
        with anyio.fail_after(60):
            return await self.process.wait()


@asynccontextmanager
async def serving(env: Mapping[str, str], port: int) -> AsyncIterator[Served]:
    """``mandate serve`` until the block ends (or the process dies), ready once /healthz answers."""
    data_dir = Path(env["MANDATE_DATA_DIR"])
    process = await anyio.open_process(
        [MANDATE, "serve", "--port", str(port)],
        env={**env, "MANDATE_PORT": str(port)},
        cwd=ROOT,
        stdout=None,
        stderr=None,
    )
    try:
        async with httpx2.AsyncClient(timeout=2) as http:
            with anyio.fail_after(60):
                while True:
                    if process.returncode is not None:
                        raise AssertionError(f"mandate serve exited with {process.returncode} before serving")
                    try:
                        if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                            break
                    except httpx2.TransportError:
                        pass
                    await anyio.sleep(0.05)
        yield Served(process, port, data_dir, env.get("MANDATE_PUBLIC_URL"))
    finally:
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(20):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        await process.aclose()
