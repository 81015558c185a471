"""Fixtures that drive Mandate with third-party npm peers.

The peers (MCP Inspector CLI, oauth2-mock-server, the TypeScript MCP SDK) are pinned in
``tests/interop/package.json`` / ``package-lock.json``; install them with ``npm ci --prefix tests/interop``.
Without them the interop tests are skipped locally, and fail under CI (env ``CI`` set): CI must run them.

Every process started here is stopped in a ``finally`` and every wait is bounded by a deadline (see peers.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .peers import INSPECTOR, NODE_MODULES, Inspector, MandateInstance, MockIssuer, new_mandate, start_mock_issuer


@pytest.fixture(scope="session", autouse=True)
def npm_peers() -> None:
    """Skip (locally) or fail (under CI) when Node or the pinned npm peers are not installed."""
    problems = []
    if shutil.which("node") is None:
        problems.append("`node` is not on PATH")
    if not INSPECTOR.exists():
        problems.append(f"{NODE_MODULES} is missing: run `npm ci --prefix tests/interop`")
    if not problems:
        return
    reason = "interop peers unavailable: " + "; ".join(problems)
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI is set, so the interop tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mock_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockIssuer]:
    """oauth2-mock-server on a port of its own, with one RS256 key."""
    with start_mock_issuer(tmp_path_factory.mktemp("mock-issuer")) as issuer:
        yield issuer


@pytest.fixture(scope="session")
def mandate(tmp_path_factory: pytest.TempPathFactory, mock_issuer: MockIssuer) -> Iterator[MandateInstance]:
    """One running Mandate (streamable HTTP) that trusts its dev issuer and oauth2-mock-server."""
    instance = new_mandate(tmp_path_factory.mktemp("mandate"), dev_issuer=True, issuers=[mock_issuer])
    with instance.serve():
        yield instance


@pytest.fixture(scope="session")
def support_token(mandate: MandateInstance) -> str:
    """A dev-issuer token for the `support` agent (customers:read orders:read)."""
    return mandate.mint_agent("support")


@pytest.fixture(scope="session")
def refunds_token(mandate: MandateInstance) -> str:
    """A dev-issuer token for the `refunds` agent (customers:read orders:read refunds:create)."""
    return mandate.mint_agent("refunds")


@pytest.fixture
def inspector(tmp_path: Path) -> Inspector:
    """The MCP Inspector CLI with a HOME of its own."""
    home = tmp_path / "inspector-home"
    home.mkdir()
    return Inspector(home)
