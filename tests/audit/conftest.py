"""Fixtures for the audit tests: a database with the schema and the chain head, and the ``mandate`` CLI run in a
worker thread against the test's database (``server.cli.main``, settings from the environment)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import pytest

from server.cli import main
from server.config import Settings


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


Cli = Callable[..., Awaitable[CliResult]]


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("MANDATE_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("MANDATE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MANDATE_INSTANCE", "cli-test")
    monkeypatch.delenv("MANDATE_CONFIG", raising=False)
    monkeypatch.delenv("MANDATE_AUDIT_KEY", raising=False)

    async def run(*argv: str) -> CliResult:
        capsys.readouterr()
        code = await anyio.to_thread.run_sync(main, list(argv))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
