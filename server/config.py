"""Settings: a TOML file (``MANDATE_CONFIG``) overlaid by ``MANDATE_*`` environment variables and CLI flags.

Secrets never live in this file's output: :meth:`Settings.describe` renders the database URL with its password
hidden. The trusted issuers are the production identity configuration (MCP authorization spec 2025-11-25,
"Token Validation"; RFC 9068 section 4): exact issuer, JWKS URL or discovery, algorithm allow-list and accepted
``typ`` values per issuer, and this server's own resource URL as the audience (RFC 8707).
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

_FORBIDDEN_ALGORITHMS = {"none", "HS256", "HS384", "HS512"}


class ConfigError(ValueError):
    """The configuration file or environment is invalid; the message names the file and field."""


class IssuerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    issuer: Annotated[str, Field(min_length=1)]
    """The issuer identifier, compared exactly with the token's ``iss`` (RFC 9068 section 4)."""
    jwks_uri: str | None = None
    """The issuer's JWK Set URL (or a local file path). Unset: found through OpenID Connect / RFC 8414 discovery."""
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"])
    """Signature algorithms accepted from this issuer; ``none`` and ``HS*`` are refused at load (RFC 8725 3.1)."""
    accepted_types: list[str] = Field(default_factory=lambda: ["at+jwt", "application/at+jwt"])
    """Accepted JOSE ``typ`` values (RFC 9068 section 2.1). Add ``"jwt"`` for servers that write ``typ: JWT``."""
    tenant_claim: str | None = "tenant"
    """The claim naming the caller's tenant; ``""`` for a single-tenant deployment (no tenants at all)."""
    require_tenant: bool | None = None
    """Refuse this issuer's tokens that lack ``tenant_claim``: a token without a tenant is not bound to one and would
    see every tenant's customers. Unset: required whenever ``tenant_claim`` names a claim (fail closed); set
    ``false`` explicitly to let tenant-less tokens see all tenants."""
    accept_untyped: bool = False
    """Also accept this issuer's tokens that carry no ``typ`` header (Okta's access tokens have none). Weaker than
    explicit typing (RFC 8725 section 3.11): the audience check is then what keeps its ID tokens out."""
    client_id_claim: str | None = None
    """The claim naming the client, read before ``client_id`` and ``azp`` (Okta writes ``cid``)."""
    scope_claims: list[Annotated[str, Field(min_length=1)]] | None = None
    """The claims this issuer's granted scopes are read from, merged: ``scope`` (RFC 9068), ``scp`` (Entra ID
    delegated, Okta), ``roles`` (Entra ID application roles), ``permissions`` (Auth0 RBAC) or any other claim holding
    a space-separated string or a list of strings. Unset: ``scope``, or ``scp`` when there is no ``scope``."""

    @field_validator("tenant_claim")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @property
    def tenant_required(self) -> bool:
        return self.tenant_claim is not None if self.require_tenant is None else self.require_tenant

    @field_validator("algorithms")
    @classmethod
    def _no_symmetric_or_none(cls, value: list[str]) -> list[str]:
        bad = sorted(set(value) & _FORBIDDEN_ALGORITHMS)
        if bad:
            raise ValueError(f"algorithm(s) {', '.join(bad)} are never accepted (RFC 8725 section 3.1)")
        if not value:
            raise ValueError("at least one algorithm")
        return value


DEFAULT_APPROVER_CLAIM = "mandate_approver"


class ApprovalSettings(BaseModel):
    """Pending approvals (docs/approvals.md): how long one waits, and which tokens count as a human approver."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    ttl_seconds: Annotated[int, Field(ge=60, le=30 * 86400)] = 86400
    """How long a pending approval waits for a decision before it expires (at least 60 s, at most 30 days)."""
    approver_claim: str | None = DEFAULT_APPROVER_CLAIM
    """Only tokens carrying this claim may list, inspect or decide approvals (not just the scope): the mark of a
    human approver that the authorization server gives people, never agents."""
    allow_any_approver: bool = False
    """Let any token with ``approvals:decide`` approve, marker or not (the old default; not recommended)."""
    approver_claim_value: str | None = None
    """The value the claim must have (or contain, for a list); unset: the claim must be JSON ``true``."""


class IdempotencySettings(BaseModel):
    """Idempotency keys (docs/approvals.md): how long a stored result is kept, and how long a claim may be held."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    ttl_seconds: Annotated[int, Field(ge=60, le=30 * 86400)] = 86400
    """How long the first answer to an idempotency key is kept and replayed to retries."""
    lease_seconds: Annotated[int, Field(ge=2, le=3600)] = 60
    """How long an in-progress claim blocks duplicates before a retry may take it over (a crashed process's)."""
    owner_silence_seconds: Annotated[int, Field(ge=3, le=3600)] = 10
    """A claim whose owner's heartbeat is older than this is taken over at once (server/liveness.py)."""


class EffectsSettings(BaseModel):
    """Effects at outside systems (docs/effects.md): how long an intent may stay ``started`` before the reconciler
    asks the provider what happened, and how often each process's reconciler looks."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    lease_seconds: Annotated[float, Field(ge=0.5, le=3600)] = 60.0
    """Counted from when the intent is written. The provider call must end before the lease's last fifth, which is
    left for a request the client gave up on to land (so it must exceed 1.25 times the provider's timeout). Past
    the lease the reconciler may resolve the intent, and an absent object then means the call never happened."""
    reconcile_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    """How often each process's reconciler looks for intents past their lease."""
    reconcile_batch: Annotated[int, Field(ge=1, le=1000)] = 50
    """How many intents one reconciler pass resolves at most; after a full pass that resolved any, the next one runs."""
    reconcile_concurrency: Annotated[int, Field(ge=1, le=8)] = 4
    """How many intents of one pass are resolved at once, each waiting on its own provider lookup; 1: one by one.
    At most 8: each holds a database connection while it writes what it learned, and on PostgreSQL a process's
    pool has 20 for its calls and its upkeep together."""


class WebhookSettings(BaseModel):
    """The approval webhook: a signed JSON POST (Standard Webhooks) when an approval is created or decided."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    url: str | None = None
    """Where approval events are POSTed (http:// or https://). Unset: no webhook."""
    secret: SecretStr | None = None
    """The signing secret (``whsec_`` + base64, or any string). Never logged, stored or printed."""
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    """How long one delivery attempt may take."""
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 12
    """Delivery attempts (with backoff) before an event is given up and logged."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("the webhook URL must be http:// or https://")
        return value

    @model_validator(mode="after")
    def _signed(self) -> WebhookSettings:
        if self.url and not (self.secret and self.secret.get_secret_value()):
            raise ValueError("a webhook URL needs a secret to sign its deliveries (webhook.secret)")
        return self

    @property
    def enabled(self) -> bool:
        return self.url is not None


class MetricsSettings(BaseModel):
    """``GET /metrics`` (Prometheus text format; docs/operations.md, "Metrics"): who may scrape it."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: bool = True
    """Serve ``GET /metrics`` at all."""
    allow_loopback: bool = True
    """Scrapes from 127.0.0.1/::1 need no credential (a Prometheus or agent on the same host)."""
    token: SecretStr | None = None
    """A static bearer token a remote scraper sends (``Authorization: Bearer ...``). Never logged or printed."""
    cache_seconds: Annotated[float, Field(ge=0, le=300)] = 2.0
    """How long the database gauges (pending approvals, suspensions, audit length) are reused between scrapes."""


class TracingSettings(BaseModel):
    """OpenTelemetry traces over OTLP/HTTP (docs/operations.md, "Traces")."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    otlp_endpoint: str | None = None
    """The OTLP/HTTP traces URL, e.g. ``http://collector:4318/v1/traces``; unset: nothing is exported."""
    service_name: str = "mandate"
    """The ``service.name`` resource attribute of exported spans."""
    headers: dict[str, SecretStr] = Field(default_factory=dict[str, SecretStr])
    """Extra headers for the exporter (an API key); never logged or printed."""

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("the OTLP endpoint must be http:// or https:// (OTLP/HTTP)")
        return value


class GuardSettings(BaseModel):
    """Suspensions and refusal aggregation (docs/operations.md, "Suspensions" and "Invalid-token floods")."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    suspension_cache_seconds: Annotated[float, Field(gt=0, le=1.0)] = 0.5
    """How old each process's view of the suspensions may be; at most 1 s, so a suspension holds everywhere
    within a second even without PostgreSQL's NOTIFY."""
    refusal_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """Auth refusals after the first of a (source, error) are counted, and written as one record per interval."""


class ConsoleSettings(BaseModel):
    """The web console (docs/console.md): the OAuth client it logs people in with, and how long a session lasts."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: bool = True
    """Serve the web console at ``/console``."""
    issuer: str | None = None
    """The authorization server people log in at (found by RFC 8414 / OIDC discovery). Default: the first
    configured issuer, else the development issuer when it is on."""
    client_id: str = "mandate-console"
    """The console's OAuth client id at that authorization server."""
    client_secret: SecretStr | None = None
    """Set for a confidential client (client_secret_basic at the token endpoint); unset: a public client (PKCE only)."""
    scopes: list[str] = Field(default_factory=lambda: ["approvals:decide", "audit:read", "principals:suspend"])
    """The scopes the console asks for; what a person may do is what their token grants."""
    session_ttl_seconds: Annotated[int, Field(ge=300, le=7 * 86400)] = 8 * 3600
    """A session ends at this age or when its access token expires, whichever comes first."""


class MailSettings(BaseModel):
    """``[mail]``: how account email confirmation codes and notices are sent (server/mail)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    sender: Literal["smtp", "outbox", "none"] | None = None
    """unset: ``smtp`` when ``smtp_host`` is set, else ``outbox`` with the development issuer, else ``none``."""
    smtp_host: str | None = None
    """The SMTP server that sends the mail (``sender = "smtp"``); setting it alone selects ``smtp``."""
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 587
    """The SMTP server's port (587: submission)."""
    starttls: bool = True
    """Upgrade the SMTP connection with STARTTLS (certificate verified) before logging in or sending."""
    username: str | None = None
    """The SMTP login; unset: no login. Logs in only when ``password_env`` is set too."""
    password_env: str | None = None
    """The name of the environment variable holding the SMTP password (the password is never in the file)."""
    from_address: str = "mandate@localhost"
    """The ``From`` address of every message."""
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    """How long one SMTP connection and send may take."""
    outbox_dir: Path | None = None
    """The development outbox (``sender = "outbox"``); default DATA_DIR/outbox."""
    code_ttl_seconds: Annotated[int, Field(ge=60, le=86400)] = 900
    """How long an email confirmation code stays valid."""
    code_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    """Wrong codes allowed before a pending email change is locked."""

    @model_validator(mode="after")
    def _smtp_has_host(self) -> MailSettings:
        if self.sender == "smtp" and not self.smtp_host:
            raise ValueError('sender = "smtp" needs smtp_host')
        return self


class PaymentsSettings(BaseModel):
    """The payments provider that external refunds go through (docs/effects.md, "Payments provider").

    ``provider`` unset means no provider: refunds are rows in the embedded demo store only. The API key is a
    :class:`SecretStr`: its ``repr()``, :meth:`Settings.describe` and every error show ``**********``, never the key.
    Use a restricted key (``rk_live_...``) allowed to write refunds and read payment intents, nothing else.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    provider: Literal["stripe"] | None = None
    """The provider refunds go through: ``"stripe"``; unset: refunds stay in the embedded demo store."""
    api_key: SecretStr | None = None
    """The provider's API key (best a restricted key); never logged, recorded or shown. ``MANDATE_STRIPE_API_KEY``."""
    api_base: str | None = None
    """Where the Stripe API is (default https://api.stripe.com); ``http://127.0.0.1:PORT`` for localstripe."""
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    """The whole of one provider call, connection to last byte; past it the call is in doubt, never retried here."""

    @field_validator("api_base")
    @classmethod
    def _http_base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("the API base must be an http:// or https:// origin, e.g. https://api.stripe.com")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("a plain http:// API base is only accepted on loopback (localstripe); use https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _keyed(self) -> PaymentsSettings:
        if self.provider is not None and not (self.api_key and self.api_key.get_secret_value()):
            raise ValueError(
                f"payments provider {self.provider!r} needs an API key (payments.api_key or MANDATE_STRIPE_API_KEY)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def describe(self) -> str:
        if self.provider is None:
            return "payments: none (embedded store only)"
        return f"payments: {self.provider} at {self.api_base or 'https://api.stripe.com'} (key set, hidden)"


class AuditSettings(BaseModel):
    """The audit log's sequencer and verification (docs/audit.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    integration_interval_seconds: Annotated[float, Field(gt=0, le=1.0)] = 0.5
    """How often the active sequencer integrates new records: the bound on a record's wait for its log position
    (plus one batch's own time; plus one interval for a standby replica to take over when the active one dies)."""
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 10_000
    """At most this many records are integrated in one sequencer transaction."""
    integration_deadline_seconds: Annotated[float, Field(gt=0, le=86400)] = 60.0
    """``mandate audit verify`` reports a record (and its effect) still unintegrated this long after it was
    written: the sequencer is down, or a record was slipped past it."""
    signing_key: Path | None = None
    """The Ed25519 key the sequencer signs tree heads with; default ``$MANDATE_AUDIT_KEY``, else
    DATA_DIR/audit-keys/checkpoint-ed25519.pem (created 0600 on first use). Keep it apart from the database."""


class Settings(BaseModel):
    # Every field needs a docstring: it is its entry in docs/configuration.md (server/config_reference.py).
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    data_dir: Path = Path("data")
    """Where the SQLite database, the development issuer's key and audit checkpoints live."""
    database_url: str | None = None
    """The database: ``postgresql://user@host/db`` or ``sqlite:///path.db``. Unset: ``DATA_DIR/mandate.db``."""
    host: str = "127.0.0.1"
    """The address ``mandate serve`` listens on."""
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    """The port ``mandate serve`` listens on; 0 picks a free one (printed at start)."""
    resource_url: str | None = None
    """This server's MCP endpoint URL: the audience tokens must name. Defaults to http://HOST:PORT/mcp."""
    public_url: str | None = None
    """The base URL clients reach this server at, if different from http://HOST:PORT (behind a proxy)."""
    dev_issuer: bool = False
    """Trust the local development issuer. Development only."""
    issuers: list[IssuerConfig] = Field(default_factory=list[IssuerConfig])
    """The trusted authorization servers, one ``[[issuers]]`` table each."""
    stateless: bool = True
    """Stateless streamable HTTP (any replica answers any request); ``--stateful`` turns on SDK sessions."""
    json_response: bool = True
    """Answer POSTs with a JSON body rather than an SSE stream."""
    allowed_hosts: list[str] = Field(default_factory=list[str])
    """``Host`` values accepted (DNS rebinding protection, ``host:*`` wildcards). Empty: this host and loopback."""
    instance: str = Field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}",
        json_schema_extra={"default_shown": "`HOSTNAME:PID`"},
    )
    """This process's name in audit records and leases."""
    tool_modules: list[str] = Field(default_factory=lambda: ["tools"])
    """Python packages or files whose ``@tool`` functions are served (read at start: a new tool needs a restart)."""
    catalog_path: Path | None = None
    """The scope catalog (every scope a tool may require). Unset: the built-in ``scopes/catalog.toml``."""
    agents_path: Path | None = None
    """The development agents for ``token mint --agent``. Unset: the built-in ``scopes/agents.toml``."""
    policy_path: Path | None = None
    """The policy file (docs/policy.md); default scopes/policy.toml. Reloaded when it changes."""
    log_level: str = "INFO"
    """The server's log level. One-shot commands log warnings only unless this is set explicitly."""
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per log line (docs/operations.md, "Logs")."""
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    """The ``[metrics]`` table."""
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    """The ``[tracing]`` table."""
    guards: GuardSettings = Field(default_factory=GuardSettings)
    """The ``[guards]`` table."""
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    """The ``[approvals]`` table."""
    idempotency: IdempotencySettings = Field(default_factory=IdempotencySettings)
    """The ``[idempotency]`` table."""
    effects: EffectsSettings = Field(default_factory=EffectsSettings)
    """The ``[effects]`` table."""
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    """The ``[webhook]`` table."""
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    """The ``[console]`` table."""
    payments: PaymentsSettings = Field(default_factory=PaymentsSettings)
    """The ``[payments]`` table."""
    mail: MailSettings = Field(default_factory=MailSettings)
    """The ``[mail]`` table."""
    audit: AuditSettings = Field(default_factory=AuditSettings)
    """The ``[audit]`` table."""
    background_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0
    """How often each process's background task expires approvals, delivers webhooks and purges old keys."""
    audiences: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list[str])
    """More audiences a token may name instead of ``resource_url`` (an issuer that writes an API identifier or a
    client id into ``aud``). The resource URL stays the one advertised in the protected resource metadata."""
    jwks_cooldown_seconds: Annotated[float, Field(ge=1, le=3600)] = 60.0
    """At most one refetch of an issuer's JWKS per this many seconds when a token names an unknown ``kid``."""
    jwks_max_age_seconds: Annotated[float, Field(ge=10, le=86400)] = 600.0
    """Fetch an issuer's JWKS again after this many seconds, so retired keys stop verifying."""
    clock_leeway_seconds: Annotated[int, Field(ge=0, le=300)] = 30
    """Clock skew allowed when checking ``exp``, ``nbf`` and ``iat``."""

    @property
    def base_url(self) -> str:
        """Where clients reach this server: ``public_url``, else the origin of ``resource_url``, else HOST:PORT."""
        if self.public_url:
            return self.public_url.rstrip("/")
        if self.resource_url:
            parts = urlsplit(self.resource_url)
            return f"{parts.scheme}://{parts.netloc}"
        return f"http://{self.host}:{self.port}"

    @property
    def audience(self) -> str:
        return self.resource_url or f"{self.base_url}/mcp"

    @property
    def dev_issuer_url(self) -> str:
        return f"{self.base_url}/dev-issuer"

    @property
    def console_url(self) -> str:
        return f"{self.base_url}/console"

    @property
    def console_issuer(self) -> str | None:
        """The issuer the console logs people in at (``console.issuer``, else the first trusted one)."""
        if self.console.issuer:
            return self.console.issuer
        if self.issuers:
            return self.issuers[0].issuer
        return self.dev_issuer_url if self.dev_issuer else None

    @property
    def accepted_audiences(self) -> list[str]:
        """Every audience a token may name: this server's resource URL first, then ``audiences``."""
        return list(dict.fromkeys([self.audience, *self.audiences]))

    @property
    def effective_database_url(self) -> str:
        from server.storage.database import sqlite_url_for  # SQLAlchemy loads only for commands that use it

        return self.database_url or sqlite_url_for(self.data_dir)

    def describe_database(self) -> str:
        """The database URL with any password hidden, in the URL or in its query (``?password=...``)."""
        from server.storage.database import normalise_url

        parsed = normalise_url(self.effective_database_url)
        hidden = {key: "***" for key in parsed.query}
        return f"database {parsed.set(query=hidden).render_as_string(hide_password=True)}"

    def describe(self) -> str:
        issuers = [i.issuer for i in self.issuers] + (
            [f"{self.dev_issuer_url} (development)"] if self.dev_issuer else []
        )
        return (
            f"{self.describe_database()}; audience {self.audience}; trusted issuers: {', '.join(issuers) or 'none'}; "
            f"{self.payments.describe()}"
        )


_ENV: Mapping[str, str] = {
    "MANDATE_DATA_DIR": "data_dir",
    "MANDATE_DATABASE_URL": "database_url",
    "MANDATE_HOST": "host",
    "MANDATE_PORT": "port",
    "MANDATE_RESOURCE_URL": "resource_url",
    "MANDATE_PUBLIC_URL": "public_url",
    "MANDATE_DEV_ISSUER": "dev_issuer",
    "MANDATE_INSTANCE": "instance",
    "MANDATE_LOG_LEVEL": "log_level",
    "MANDATE_LOG_FORMAT": "log_format",
    "MANDATE_POLICY": "policy_path",
    "MANDATE_BACKGROUND_INTERVAL_SECONDS": "background_interval_seconds",
    "MANDATE_JWKS_COOLDOWN_SECONDS": "jwks_cooldown_seconds",
    "MANDATE_JWKS_MAX_AGE_SECONDS": "jwks_max_age_seconds",
    "MANDATE_CLOCK_LEEWAY_SECONDS": "clock_leeway_seconds",
}

_LIST_ENV: Mapping[str, str] = {
    # comma-separated lists
    "MANDATE_AUDIENCES": "audiences",
    "MANDATE_TOOL_MODULES": "tool_modules",
}

_NESTED_ENV: Mapping[str, tuple[str, str]] = {
    "MANDATE_APPROVAL_TTL_SECONDS": ("approvals", "ttl_seconds"),
    "MANDATE_APPROVER_CLAIM": ("approvals", "approver_claim"),
    "MANDATE_APPROVER_CLAIM_VALUE": ("approvals", "approver_claim_value"),
    "MANDATE_ALLOW_ANY_APPROVER": ("approvals", "allow_any_approver"),
    "MANDATE_IDEMPOTENCY_TTL_SECONDS": ("idempotency", "ttl_seconds"),
    "MANDATE_EFFECTS_LEASE_SECONDS": ("effects", "lease_seconds"),
    "MANDATE_EFFECTS_RECONCILE_INTERVAL_SECONDS": ("effects", "reconcile_interval_seconds"),
    "MANDATE_IDEMPOTENCY_LEASE_SECONDS": ("idempotency", "lease_seconds"),
    "MANDATE_WEBHOOK_URL": ("webhook", "url"),
    "MANDATE_WEBHOOK_SECRET": ("webhook", "secret"),
    "MANDATE_CONSOLE_ISSUER": ("console", "issuer"),
    "MANDATE_CONSOLE_CLIENT_ID": ("console", "client_id"),
    "MANDATE_CONSOLE_CLIENT_SECRET": ("console", "client_secret"),
    "MANDATE_METRICS_TOKEN": ("metrics", "token"),
    "MANDATE_OTLP_ENDPOINT": ("tracing", "otlp_endpoint"),
    "MANDATE_PAYMENTS_PROVIDER": ("payments", "provider"),
    "MANDATE_STRIPE_API_BASE": ("payments", "api_base"),
    "MANDATE_PAYMENTS_TIMEOUT_SECONDS": ("payments", "timeout_seconds"),
    "MANDATE_MAIL_SENDER": ("mail", "sender"),
    "MANDATE_SMTP_HOST": ("mail", "smtp_host"),
    "MANDATE_SMTP_PORT": ("mail", "smtp_port"),
    "MANDATE_SMTP_STARTTLS": ("mail", "starttls"),
    "MANDATE_SMTP_USERNAME": ("mail", "username"),
    "MANDATE_SMTP_PASSWORD_ENV": ("mail", "password_env"),
    "MANDATE_MAIL_FROM": ("mail", "from_address"),
    "MANDATE_AUDIT_INTEGRATION_INTERVAL_SECONDS": ("audit", "integration_interval_seconds"),
    "MANDATE_AUDIT_INTEGRATION_DEADLINE_SECONDS": ("audit", "integration_deadline_seconds"),
}


ISSUER_ENV: Mapping[str, str] = {
    "MANDATE_ISSUER": "issuer",
    "MANDATE_JWKS_URI": "jwks_uri",
    "MANDATE_ACCEPTED_TYPES": "accepted_types",
    "MANDATE_SCOPE_CLAIMS": "scope_claims",
}
"""One trusted issuer from the environment (``MANDATE_ISSUER`` replaces the file's ``[[issuers]]``)."""


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def environment_variables() -> dict[str, str]:
    """Every ``MANDATE_*`` variable that sets a setting, with the setting's dotted path (for the reference docs)."""
    names = {variable: key for variable, key in _ENV.items()}
    names.update({variable: f"{table}.{key}" for variable, (table, key) in _NESTED_ENV.items()})
    names.update(_LIST_ENV)
    names.update({variable: f"issuers.{key}" for variable, key in ISSUER_ENV.items()})
    return names


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = "environment"
    config_path = env.get("MANDATE_CONFIG")
    if config_path:
        source = config_path
        try:
            with Path(config_path).open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"{config_path}: file not found (MANDATE_CONFIG)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
    for variable, key in _ENV.items():
        if variable in env and env[variable] != "":
            value: Any = env[variable]
            if key == "dev_issuer":
                value = value.lower() in ("1", "true", "yes", "on")
            data[key] = value
    for variable, (table, key) in _NESTED_ENV.items():
        if env.get(variable):
            section = data.setdefault(table, {})
            if isinstance(section, dict):
                section[key] = env[variable]
    if env.get("MANDATE_STRIPE_API_KEY"):
        # The key alone names the provider: MANDATE_STRIPE_API_KEY=rk_live_... is all a deployment needs to set.
        section = data.setdefault("payments", {})
        if isinstance(section, dict):
            section["api_key"] = env["MANDATE_STRIPE_API_KEY"]
            section.setdefault("provider", "stripe")
    if env.get("MANDATE_ISSUER"):
        data["issuers"] = [
            {
                "issuer": env["MANDATE_ISSUER"],
                **({"jwks_uri": env["MANDATE_JWKS_URI"]} if env.get("MANDATE_JWKS_URI") else {}),
                **(
                    {"accepted_types": env["MANDATE_ACCEPTED_TYPES"].split(",")}
                    if env.get("MANDATE_ACCEPTED_TYPES")
                    else {}
                ),
                **({"scope_claims": _split(env["MANDATE_SCOPE_CLAIMS"])} if env.get("MANDATE_SCOPE_CLAIMS") else {}),
            }
        ]
    for variable, key in _LIST_ENV.items():
        if env.get(variable):
            data[key] = _split(env[variable])
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: invalid configuration"]
        for error in exc.errors(include_url=False, include_input=False):
            lines.append(f"  {'.'.join(str(p) for p in error['loc'])}: {error['msg']}")
        raise ConfigError("\n".join(lines)) from None
