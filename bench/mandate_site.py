"""Mandate's side of the comparison: full enforcement over the benchmark catalog.

Token verification (the development issuer's real ES256 tokens, JWKS read from its file and cached), scope
filtering (every tool needs a scope; the token holds them all), strict argument validation, the policy decision
(``bench/policy.py`` configures a cumulative cap on ``bench_spend`` once the policy engine exists), and the audit
record, written durably in the call's own transaction (SQLite in WAL mode, or PostgreSQL).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bench.catalog_tools import ALL_SCOPES, catalog_module
from bench.policy import configure_policy
from server.app import Mandate, open_mandate
from server.auth.dev_issuer import DevIssuer
from server.config import Settings
from server.storage.database import Database
from server.storage.migrate import upgrade

BENCH_SCOPES = Path(__file__).with_name("scopes.toml")


BENCH_AUDIENCE = "http://127.0.0.1/mcp"
"""The resource URL every benchmarked Mandate answers for (the sites of one process share it, whatever their port)."""


def bench_settings(data_dir: Path, *, tools: int, stateless: bool = True, database_url: str | None = None) -> Settings:
    """The settings of one benchmarked Mandate; the parent and the server process build the same ones."""
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        host="127.0.0.1",
        resource_url=BENCH_AUDIENCE,
        dev_issuer=True,
        stateless=stateless,
        json_response=True,
        instance="bench",
        tool_modules=[catalog_module(tools)],
        catalog_path=BENCH_SCOPES,
        log_level="WARNING",
    )
    return configure_policy(settings)


def mint_token(settings: Settings, *, ttl: timedelta = timedelta(hours=2)) -> str:
    """A real development-issuer token for the benchmark agent, holding every benchmark scope."""
    issuer = DevIssuer.load_or_create(settings.data_dir, settings.dev_issuer_url)
    return issuer.mint(
        subject="agent:bench",
        client_id="bench-agent",
        scopes=ALL_SCOPES,
        audience=settings.audience,
        ttl=ttl,
    )


async def open_bench_mandate(settings: Settings) -> Mandate:
    """The running parts, with the JWKS read from the development issuer's file (fetched once, then cached).

    On PostgreSQL the bench's fresh schema is migrated first, as an operator runs ``mandate db upgrade`` as the
    owner before starting the server (docs/database.md); SQLite migrates its file at start by itself.
    """
    DevIssuer.load_or_create(settings.data_dir, settings.dev_issuer_url).write_jwks_file()
    database = Database(settings.effective_database_url)
    try:
        if not database.is_sqlite:
            await upgrade(database)
    finally:
        await database.dispose()
    return await open_mandate(settings, local_dev_jwks=True)


def refund_settings(data_dir: Path, *, stateless: bool = True, database_url: str | None = None) -> Settings:
    """A benchmarked Mandate serving the real catalog (``tools``) under the default scopes and policy: the
    ``refund_create`` of a deployment, with its per-call cap, daily and rolling budgets, facts and audit record."""
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        host="127.0.0.1",
        resource_url=BENCH_AUDIENCE,
        dev_issuer=True,
        stateless=stateless,
        json_response=True,
        instance="bench-refund",
        log_level="WARNING",
    )


def mint_refund_token(settings: Settings, *, ttl: timedelta = timedelta(hours=2)) -> str:
    """A development-issuer token of a refunds agent in the bench tenant (the large tier: see bench.refund_store)."""
    from bench.refund_store import REFUND_SCOPES, TENANT

    issuer = DevIssuer.load_or_create(settings.data_dir, settings.dev_issuer_url)
    return issuer.mint(
        subject="agent:bench-refunds",
        client_id="bench-refunds",
        scopes=REFUND_SCOPES,
        audience=settings.audience,
        ttl=ttl,
        tenant=TENANT,
    )


async def open_refund_mandate(settings: Settings) -> Mandate:
    """The running parts over the real catalog, with the bench order seeded."""
    from bench.refund_store import seed_refund_order

    mandate = await open_bench_mandate(settings)
    async with mandate.db.engine.begin() as connection:
        await seed_refund_order(connection)
    return mandate
