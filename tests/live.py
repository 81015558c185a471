"""Running Mandate for real in a test: uvicorn on a free 127.0.0.1 port, with the dev issuer's JWKS over HTTP."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx2
import uvicorn
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from server.app import Mandate, build_http_app, open_mandate
from server.config import Settings
from tests.conftest import Harness
from tools.store.seed import seed_demo_store


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class LiveServer:
    url: str
    base_url: str
    harness: Harness

    @property
    def mandate(self) -> Mandate:
        return self.harness.mandate

    @asynccontextmanager
    async def client(self, token: str | None, **options: Any) -> AsyncIterator[Client]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=10) as http,
            Client(streamable_http_client(self.url, http_client=http), **options) as client,
        ):
            yield client


@asynccontextmanager
async def live_server(data_dir: Path, database_url: str, **settings: Any) -> AsyncIterator[LiveServer]:
    sock = bound_socket()
    port = sock.getsockname()[1]
    config = Settings(
        data_dir=data_dir, database_url=database_url, dev_issuer=True, port=port, instance="live-test", **settings
    )
    mandate = await open_mandate(config)
    try:
        now = datetime.now(UTC)
        await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, now))
        server = uvicorn.Server(uvicorn.Config(build_http_app(mandate), log_level="warning", lifespan="on"))
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: server.serve(sockets=[sock]))
            with anyio.fail_after(10):
                while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
                    await anyio.sleep(0.01)
            try:
                yield LiveServer(config.audience, config.base_url, Harness(mandate))
            finally:
                server.should_exit = True
    finally:
        sock.close()
        await mandate.aclose()
