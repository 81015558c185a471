"""A harness whose server enforces a policy written by the test (``policy_harness(text)``)."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server.app import open_mandate
from server.config import Settings
from tests.conftest import Harness
from tools.store.seed import seed_demo_store

PolicyHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def policy_harness(settings: Settings, tmp_path: Path) -> AsyncIterator[PolicyHarness]:
    """Start a Mandate enforcing the given policy text (and extra tool modules), seeded with the demo store."""
    async with AsyncExitStack() as stack:

        async def start(text: str, *, tool_modules: tuple[str, ...] = ()) -> Harness:
            path = tmp_path / "policy.toml"
            path.write_text(textwrap.dedent(text))
            configured = settings.model_copy(update={"policy_path": path, "tool_modules": ["tools", *tool_modules]})
            mandate = await open_mandate(configured, local_dev_jwks=True)
            stack.push_async_callback(mandate.aclose)
            now = datetime.now(UTC)
            await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, now))
            return Harness(mandate)

        yield start
