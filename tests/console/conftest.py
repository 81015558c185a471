"""Fixtures for the console: a live server (uvicorn on a free port, dev issuer on) and a cookie-keeping client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest

from tests.console.helpers import Browser
from tests.live import LiveServer, live_server


@pytest.fixture
async def live(tmp_path: Path, database_url: str) -> AsyncIterator[LiveServer]:
    async with live_server(tmp_path / "data", database_url) as server:
        yield server


@pytest.fixture
async def browser(live: LiveServer) -> AsyncIterator[Browser]:
    async with httpx2.AsyncClient(timeout=20, follow_redirects=False) as http:
        yield Browser(live, http)
