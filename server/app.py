"""Assembling a running Mandate: settings -> database, tool catalog, token verifier, enforcer, transports.

One place builds the object graph for every transport, so HTTP and stdio apply exactly the same checks
(STYLE.md: "auth that depends on the transport" is what to avoid).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
from mcp.server.lowlevel.server import Server
from mcp.server.transport_security import TransportSecuritySettings
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from scopes.catalog import DEFAULT_CATALOG, CatalogError, load_catalog
from server.approvals import ApprovalDesk
from server.approvals.maintenance import Maintenance, running
from server.approvals.seal import ApprovalSeal
from server.audit.sequencer import sequencing
from server.audit.service import audit_sequencer
from server.auth.dev_issuer import DevIssuer
from server.auth.jwt_verifier import JwtVerifier, TrustedIssuer
from server.auth.principal import Principal
from server.callpath.enforcer import Enforcer
from server.callpath.record import CallInfo
from server.catalog import CatalogConflict, ToolCatalog
from server.config import ConfigError, Settings
from server.effects.reconciler import reconcile_forever
from server.guards.rails import Guardrails
from server.guards.suspension import suspension_of
from server.http.bearer import BearerGuard
from server.http.metadata import metadata_routes, metadata_url
from server.http.metrics_endpoint import metrics_route
from server.liveness import beating
from server.mail import build_sender
from server.mcp_server import CredentialSource, HttpCredentials, build_mcp_server
from server.observability.metrics import Metrics
from server.observability.tracing import Tracing, configure_tracing
from server.policy_runtime import PolicyRuntime, vocabulary_of
from server.storage.database import Database
from server.storage.schema import open_schema
from server.version import package_version
from server.webhooks import Webhooks

logger = logging.getLogger(__name__)


@dataclass
class Mandate:
    """The parts of one server process."""

    settings: Settings
    db: Database
    catalog: ToolCatalog
    enforcer: Enforcer
    verifier: JwtVerifier
    http_client: httpx2.AsyncClient
    approvals: ApprovalDesk
    guards: Guardrails
    metrics: Metrics
    tracing: Tracing

    @contextlib.asynccontextmanager
    async def upkeep(self) -> AsyncIterator[Maintenance]:
        """The background tasks of a serving process: expire approvals, deliver webhooks, purge old idempotency keys,
        and resolve effects left in doubt (:mod:`server.effects.reconciler`).

        Every replica runs it; they coordinate through the database only (docs/approvals.md).
        """
        interval = self.settings.background_interval_seconds
        clock = self.enforcer.clock
        async with (
            running(self.db, self.approvals, interval=interval, clock=clock) as maintenance,
            self.guards.running(interval=interval),
            beating(self.db, self.settings.instance, interval=interval, clock=clock),
            anyio.create_task_group() as group,
            sequencing(audit_sequencer(self.settings, self.db)),
        ):
            group.start_soon(reconcile_forever, self.enforcer)  # effects left in doubt (docs/effects.md)
            try:
                yield maintenance
            finally:
                group.cancel_scope.cancel()

    async def aclose(self) -> None:
        self.tracing.shutdown()  # flushes the spans not exported yet
        for provider in self.enforcer.providers.values():
            with contextlib.suppress(Exception):
                await provider.aclose()
        await self.http_client.aclose()
        await self.db.dispose()


def trusted_issuers(settings: Settings, *, local_dev_jwks: bool) -> list[TrustedIssuer]:
    issuers = [
        TrustedIssuer(
            issuer=cfg.issuer,
            jwks_uri=cfg.jwks_uri,
            algorithms=frozenset(cfg.algorithms),
            accepted_types=frozenset(t.lower() for t in cfg.accepted_types),
            tenant_claim=cfg.tenant_claim,
            require_tenant=cfg.tenant_required,
            scope_claims=tuple(cfg.scope_claims) if cfg.scope_claims is not None else None,
            accept_untyped=cfg.accept_untyped,
            client_id_claim=cfg.client_id_claim,
        )
        for cfg in settings.issuers
    ]
    if settings.dev_issuer:
        dev = DevIssuer.load_or_create(settings.data_dir, settings.dev_issuer_url)
        jwks_uri = str(dev.write_jwks_file()) if local_dev_jwks else f"{settings.dev_issuer_url}/jwks.json"
        issuers.append(TrustedIssuer(issuer=settings.dev_issuer_url, jwks_uri=jwks_uri))
    return issuers


def load_tool_catalog(settings: Settings) -> ToolCatalog:
    path = settings.catalog_path or DEFAULT_CATALOG
    scopes = load_catalog(path)
    try:
        return ToolCatalog.from_modules(settings.tool_modules, scopes)
    except CatalogConflict as exc:
        if not exc.missing_scopes:
            raise CatalogError(str(exc)) from None
        entries = " ".join(f'[scopes."{scope}"] description = "..."' for scope in exc.missing_scopes)
        raise CatalogError(
            f"{exc}: add it to {path} ({entries}; `mandate init` gives you a copy to edit, catalog_path points at it)"
        ) from None


def load_policy_runtime(settings: Settings, catalog: ToolCatalog) -> PolicyRuntime:
    """The policy in force, reloaded when its file changes; a policy that does not load stops the start."""
    from scopes.policy import DEFAULT_POLICY

    return PolicyRuntime(settings.policy_path or DEFAULT_POLICY, vocabulary=vocabulary_of(catalog))


async def open_database(settings: Settings) -> tuple[Database, ToolCatalog]:
    """The database, at the schema revision this Mandate needs: migrated on SQLite, checked on PostgreSQL (where
    ``mandate db upgrade`` migrates; docs/database.md). The tool catalog's modules declare the store's tables."""
    catalog = load_tool_catalog(settings)
    db = Database(settings.effective_database_url)
    try:
        await open_schema(db, settings.describe_database())
    except Exception:
        await db.dispose()
        raise
    return db, catalog


async def open_mandate(settings: Settings, *, local_dev_jwks: bool = False) -> Mandate:
    """Build the parts and make sure the schema exists. ``local_dev_jwks``: read the dev JWKS from its file."""
    db, catalog = await open_database(settings)
    try:
        policies = load_policy_runtime(settings, catalog)
    except Exception:
        await db.dispose()
        raise
    http_client = httpx2.AsyncClient(timeout=5.0, follow_redirects=False)
    issuers = trusted_issuers(settings, local_dev_jwks=local_dev_jwks)
    verifier = JwtVerifier(
        issuers,
        settings.accepted_audiences,
        http_client=http_client,
        leeway_seconds=settings.clock_leeway_seconds,
        jwks_refetch_cooldown_seconds=settings.jwks_cooldown_seconds,
        jwks_max_age_seconds=settings.jwks_max_age_seconds,
    )
    try:
        providers = open_providers(settings)
    except Exception:
        await db.dispose()
        raise
    enforcer = Enforcer(
        db,
        catalog,
        instance=settings.instance,
        policies=policies,
        keys=settings.idempotency,
        effects=settings.effects,
        providers=providers,
    )
    webhooks = Webhooks(settings.webhook)
    approvals = ApprovalDesk(
        settings.approvals,
        webhooks,
        runner=enforcer,
        sensitive=enforcer.sensitive,
        seal=ApprovalSeal.load(settings.data_dir),
        console_url=settings.console_url if settings.console.enabled else None,
    )
    enforcer.approvals = approvals
    metrics = Metrics(db, data_dir=settings.data_dir, cache_seconds=settings.metrics.cache_seconds)
    tracing = configure_tracing(
        settings.tracing.otlp_endpoint,
        service_name=settings.tracing.service_name,
        instance=settings.instance,
        headers={k: v.get_secret_value() for k, v in settings.tracing.headers.items()},
    )

    async def write_refusal(address: str | None, error: str, description: str, summary: dict[str, Any]) -> str | None:
        info = CallInfo(transport="http", client_address=address)
        return await enforcer.record_refusal(None, info, None, error, description, "auth", summary)

    guards = Guardrails(
        db,
        policies,
        metrics,
        webhooks,
        record_trip=enforcer.record_guard,
        write_refusal=write_refusal,
        clock=enforcer.clock,
        suspension_ttl=settings.guards.suspension_cache_seconds,
        refusal_interval=settings.guards.refusal_interval_seconds,
    )
    enforcer.guards, enforcer.metrics, enforcer.tracer = guards, metrics, tracing.tracer

    async def requester_check(session: AsyncSession, principal: Principal) -> str | None:
        found = await suspension_of(session, principal)  # read now, in the approver's transaction
        return found.id if found is not None else None

    approvals.requester_check = requester_check
    enforcer.mail = build_sender(settings)
    return Mandate(settings, db, catalog, enforcer, verifier, http_client, approvals, guards, metrics, tracing)


def open_providers(settings: Settings) -> dict[str, Any]:
    """The outside systems configured, by kind (docs/effects.md): ``{"payments": ...}`` when ``[payments]`` names
    a provider; empty otherwise, and the tools keep their local effects (the embedded demo store)."""
    try:
        payments = importlib.import_module("server.providers.payments")
    except ModuleNotFoundError:  # pragma: no cover - the payments provider package is part of the server
        return {}
    provider = payments.open_provider(settings)
    if provider is None:
        return {}
    timeout = float(getattr(getattr(settings, "payments", None), "timeout_seconds", 0.0))
    if timeout >= settings.effects.lease_seconds * 0.8:  # past the lease a call must no longer be in flight
        raise ConfigError(
            f"effects.lease_seconds ({settings.effects.lease_seconds:g}) must be more than 1.25 times the payments "
            f"provider's timeout ({timeout:g} s), so a request can never outlive its intent's lease"
        )
    return {"payments": provider}


def build_server(mandate: Mandate, credentials: CredentialSource) -> Server[Any]:
    console = mandate.settings.console_url if mandate.settings.console.enabled else None
    return build_mcp_server(mandate.enforcer, credentials, package_version(), console_url=console)


def build_http_app(mandate: Mandate) -> Starlette:
    """The streamable HTTP app: /mcp behind the bearer guard, RFC 9728 metadata, and the dev issuer's JWKS."""
    settings = mandate.settings
    server = build_server(mandate, HttpCredentials())
    allowed_hosts = settings.allowed_hosts or [f"{settings.host}:*", "127.0.0.1:*", "localhost:*", "[::1]:*"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=allowed_hosts,
        allowed_origins=[f"http://{h}" for h in allowed_hosts] + [f"https://{h}" for h in allowed_hosts],
    )
    sdk_app = server.streamable_http_app(
        streamable_http_path="/",
        stateless_http=settings.stateless,
        json_response=settings.json_response,
        transport_security=security,
    )
    guard = BearerGuard(
        _mount_root(sdk_app),
        verifier=mandate.verifier,
        catalog=mandate.catalog,
        resource_metadata_url=metadata_url(settings.base_url, settings.audience),
        record_refusal=mandate.enforcer.record_refusal,
        guards=mandate.guards,
    )
    issuer_urls = [i.issuer for i in settings.issuers] + ([settings.dev_issuer_url] if settings.dev_issuer else [])
    routes: list[Route | Mount] = [
        Route("/mcp", guard, methods=["GET", "POST", "DELETE"]),
        *metadata_routes(settings.audience, issuer_urls, sorted(mandate.catalog.scopes.scopes)),
        Route("/healthz", _healthz, methods=["GET"]),
    ]
    if settings.metrics.enabled:
        routes.append(metrics_route(mandate.metrics, settings.metrics, mandate.verifier))
    if settings.dev_issuer:
        routes.extend(_dev_issuer_routes(settings, sorted(mandate.catalog.scopes.scopes)))
    routes.extend(_console_routes(mandate))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with server.session_manager.run(), mandate.upkeep():
            yield

    return Starlette(routes=routes, lifespan=lifespan)


def _mount_root(sdk_app: Starlette) -> Any:
    """Call the SDK's MCP endpoint as if /mcp were its root, so the guard can sit on the exact /mcp route.

    The endpoint is the SDK app's one route at ``/`` (without SDK auth it accepts every method). It is called
    directly: the SDK's Starlette around it adds only error and exception middleware and a router, which the app of
    :func:`build_http_app` already runs in front of the guard (a second stack of them, about 3 us a request).
    """
    endpoints = [route.app for route in sdk_app.routes if isinstance(route, Route) and route.path == "/"]
    if len(endpoints) != 1:
        raise RuntimeError("the SDK's streamable HTTP app has no single MCP route at /")
    endpoint = endpoints[0]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint(dict(scope, path="/", raw_path=b"/", root_path=""), receive, send)

    return app


async def _healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _dev_issuer_routes(settings: Settings, scopes: list[str]) -> list[Route]:
    """DEVELOPMENT ONLY: the dev issuer's JWKS, and its authorization server (server/auth/dev_authorization.py)."""
    from server.auth.dev_authorization import DevAuthorizationServer

    authorization = DevAuthorizationServer.for_settings(settings)
    jwks = authorization.issuer.public_jwks()

    async def jwks_endpoint(_request: Request) -> JSONResponse:
        return JSONResponse(jwks, headers={"Cache-Control": "public, max-age=60"})

    return [Route("/dev-issuer/jwks.json", jwks_endpoint, methods=["GET"]), *authorization.routes(scopes)]


def _console_routes(mandate: Mandate) -> list[Route | Mount]:
    """The web console and the approvals API (server/console/, docs/console.md)."""
    from server.console.api import ApprovalsApi
    from server.console.pages import Console

    routes: list[Route | Mount] = [*ApprovalsApi(mandate).routes()]
    if mandate.settings.console.enabled:
        routes.extend(route for route in Console(mandate).routes() if isinstance(route, Route | Mount))
    return routes
