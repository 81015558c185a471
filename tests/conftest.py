"""Shared fixtures: a real database (a SQLite file, or PostgreSQL when MANDATE_TEST_DATABASE_URL is set), a real
development issuer signing real tokens, and in-process MCP clients through the SDK's in-memory transport.

The suite runs against PostgreSQL by setting ``MANDATE_TEST_DATABASE_URL=postgresql://127.0.0.1:5432/test``: each
test then gets a schema of its own (``search_path``), dropped afterwards. That pass runs only the tests that use a
``*database_url`` fixture (``DATABASE_FIXTURES``), directly or through ``settings``, ``db``, ``harness``, ``live``...,
or are marked ``@pytest.mark.postgres`` (for a test that reaches ``POSTGRES_URL`` some other way): the others use no
database, or a SQLite file or a cluster of their own, and behave the same in both passes, so they run once, in the
SQLite pass (``pytest_collection_modifyitems`` below; the header says so). So do the few marked
``@pytest.mark.engine_independent``: they use a database only to have a server to drive, and what they check (the
stdio transport, the quickstart, ``mandate dev``'s printed steps) is the same on either engine.

Every test's database is built by the migrations (``server/storage/migrations``), as ``mandate db upgrade`` builds
one: on SQLite they run once per session into a template file that each test gets a copy of (a byte copy of the
migrated file, so nothing differs but the time); on PostgreSQL each worker migrates a schema once and hands it to
test after test, put back between them exactly as the migrations left it, or dropped when it cannot be
(``tests/pgschemas.py``). ``empty_database_url``
is a database with nothing in it, for the tests of migrating and of starting before one.

``make test`` runs the suite in pytest-xdist worker processes (docs/testing.md). A test is worker-safe when:

- the database comes from ``database_url`` (or ``empty_postgres_schema()`` for a second one), never a fixed schema,
  table or database name; anything cluster-wide on the shared PostgreSQL (a role, a database, an advisory lock key, a
  ``LISTEN`` channel whose messages it counts) is named with ``worker_id()`` or kept per schema;
- every port is a free one chosen at run time (``tests.live.bound_socket()``, localstripe's ``--port 0``), never a
  fixed one such as 8000 or 8420;
- files go under ``tmp_path`` (or ``tmp_path_factory``), never the repository or the home directory;
- a session-scoped fixture is per worker (each worker is a process of its own): it must not assume it is the only
  one on the machine;
- waits have generous deadlines and await an event (or poll a condition) instead of sleeping for a fixed time:
  workers share two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from mcp.client import Client
from sqlalchemy import create_engine

from server.app import Mandate, build_server, load_tool_catalog, open_mandate
from server.auth.dev_issuer import DevIssuer
from server.config import Settings
from server.stdio import EnvironmentCredentials
from server.storage.database import Database
from server.storage.migrate import upgrade_connection
from tests.pgschemas import SchemaPool
from tools.store.seed import seed_demo_store

POSTGRES_URL = os.environ.get("MANDATE_TEST_DATABASE_URL", "")

pytest_plugins = ["tests.providers.fixtures"]  # localstripe and payments-provider fixtures (see that module)

AGENT_SCOPES: dict[str, tuple[str, ...]] = {
    "support": ("customers:read", "orders:read"),
    "refunds": ("customers:read", "orders:read", "refunds:create"),
    "senior": (
        "customers:read",
        "customers:pii",
        "orders:read",
        "orders:cancel",
        "refunds:create",
        "refunds:create:large",
        "accounts:write",
    ),
    "supervisor": ("approvals:decide", "audit:read", "customers:read", "orders:read"),
    "nothing": (),
}


def pytest_report_header(config: pytest.Config) -> str:
    if not POSTGRES_URL:
        return "database: SQLite (a file per test)"
    return "database: PostgreSQL (a schema per test); tests that use no database ran in the SQLite pass: deselected"


DATABASE_FIXTURES = "database_url"
"""How the fixtures that hand a test its database are named (``database_url``, ``empty_database_url``...): a test
using one of them, directly or through another fixture, runs in both passes. A new fixture that gives out a test
database without going through ``database_url`` is named so too."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "engine_independent: uses the test database, but what it tests (a transport, the command line's output) "
        "does not depend on the engine: run in the SQLite pass only",
    )


def _uses_the_test_database(item: pytest.Item) -> bool:
    if item.get_closest_marker("postgres") is not None:
        return True
    if item.get_closest_marker("engine_independent") is not None:
        return False
    return any(name.endswith(DATABASE_FIXTURES) for name in getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the PostgreSQL pass, deselect the tests that use no test database (module docstring)."""
    if not POSTGRES_URL:
        return
    uses_database: list[pytest.Item] = []
    uses_none: list[pytest.Item] = []
    for item in items:
        (uses_database if _uses_the_test_database(item) else uses_none).append(item)
    if uses_none:
        config.hook.pytest_deselected(items=uses_none)
        items[:] = uses_database


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def worker_id() -> str:
    """This pytest-xdist worker's id (``gw0``, ``gw1``...), ``main`` when the suite runs without workers."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def migrate_sync(url: str) -> None:
    """Run the migrations to the newest revision on ``url`` (a synchronous engine: no event loop needed)."""
    engine = create_engine(url.replace("+aiosqlite", "").replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as connection:
            upgrade_connection(connection)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file the migrations built, once per session (each test copies it)."""
    path = tmp_path_factory.mktemp("migrated") / "mandate.db"
    migrate_sync(f"sqlite:///{path}")
    return path


def _postgres_server_url() -> str:
    return POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")


def postgres_schema_url(schema: str) -> str:
    """The test database's URL with ``schema`` as its ``search_path``."""
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"


@contextmanager
def empty_postgres_schema() -> Iterator[str]:
    """A schema of its own on the shared PostgreSQL (``search_path``, named for this worker), dropped afterwards; its
    URL."""
    schema = f"t_{worker_id()}_{uuid.uuid4().hex[:12]}"
    plain = _postgres_server_url()
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield postgres_schema_url(schema)
    finally:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def migrated_postgres_schemas() -> Iterator[SchemaPool]:
    """This worker's migrated schemas, each handed to one test at a time and made fresh again in between
    (tests/pgschemas.py); dropped at the end of the session."""
    pool = SchemaPool(_postgres_server_url(), postgres_schema_url, migrate_sync)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it, not even the migrations' version table."""
    if not POSTGRES_URL:
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    with empty_postgres_schema() as url:
        yield url


@pytest.fixture
def database_url(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for one test, at the newest schema revision, with no rows but the audit chain head."""
    if not POSTGRES_URL:
        template: Path = request.getfixturevalue("migrated_sqlite_template")
        shutil.copyfile(template, tmp_path / "mandate.db")
        yield f"sqlite+aiosqlite:///{tmp_path / 'mandate.db'}"
        return
    pool: SchemaPool = request.getfixturevalue("migrated_postgres_schemas")
    schema = pool.acquire(f"t_{worker_id()}")
    try:
        yield postgres_schema_url(schema)
    finally:
        pool.release(schema)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    """The test's database with the full schema (tables, chain head, append-only triggers) and nothing else."""
    load_tool_catalog(settings)  # the store's tables are declared by the tool modules
    database = Database(settings.effective_database_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        dev_issuer=True,
        port=8000,
        instance="test-instance",
    )


class Harness:
    """A running Mandate (without a transport) plus a development issuer to mint real tokens for it."""

    def __init__(self, mandate: Mandate) -> None:
        self.mandate = mandate
        self.issuer = DevIssuer.load_or_create(mandate.settings.data_dir, mandate.settings.dev_issuer_url)

    def token(
        self,
        agent: str = "support",
        *,
        scopes: tuple[str, ...] | None = None,
        subject: str | None = None,
        client_id: str | None = None,
        tenant: str | None = None,
        ttl: timedelta = timedelta(minutes=10),
        extra_claims: dict[str, Any] | None = None,
    ) -> str:
        if agent == "supervisor":  # a human (scopes/agents.toml): the approver marker, unless a test says otherwise
            extra_claims = {"mandate_approver": True, **(extra_claims or {})}
        return self.issuer.mint(
            subject=subject or f"agent:{agent}",
            client_id=client_id or f"{agent}-agent",
            scopes=AGENT_SCOPES[agent] if scopes is None else scopes,
            audience=self.mandate.settings.audience,
            ttl=ttl,
            tenant=tenant,
            extra_claims=extra_claims,
        )

    def signed(self, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
        """A token with exactly these claims, signed with the development issuer's real key (for bad-token tests)."""
        key = ECKey.import_key(json.loads((self.issuer.jwks_path.parent / "signing-key.json").read_text()))
        base = {"alg": "ES256", "typ": "at+jwt", "kid": self.issuer.kid}
        return jwt.encode({**base, **(header or {})}, claims, key, algorithms=["ES256"])

    def claims(self, agent: str = "support", **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.mandate.settings.dev_issuer_url,
            "sub": f"agent:{agent}",
            "aud": self.mandate.settings.audience,
            "client_id": f"{agent}-agent",
            "scope": " ".join(AGENT_SCOPES[agent]),
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        return {key: value for key, value in claims.items() if value is not None}

    @asynccontextmanager
    async def client_with_token(self, token: str) -> AsyncIterator[Client]:
        server = build_server(self.mandate, EnvironmentCredentials(token, self.mandate.verifier))
        async with Client(server, mode="legacy") as client:
            yield client

    @asynccontextmanager
    async def client(self, agent: str = "support", **token_options: Any) -> AsyncIterator[Client]:
        """An MCP client connected in process, authenticated as ``agent`` with a real, verified token."""
        async with self.client_with_token(self.token(agent, **token_options)) as client:
            yield client


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    mandate = await open_mandate(settings, local_dev_jwks=True)
    try:
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, now))
        yield Harness(mandate)
    finally:
        await mandate.aclose()
