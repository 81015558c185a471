"""DEVELOPMENT ONLY: the development issuer as a minimal OAuth 2.1 authorization server, so OAuth clients (the web
console, mcp-remote, the MCP Inspector) can complete a real authorization code flow against ``make run``.

NEVER deploy it. Anyone who reaches the authorization page can pick any development identity with any of its
scopes: there is no password. Its metadata says so (``mandate_development_only``) and so does its page.

What it implements:

- Authorization endpoint (OAuth 2.1 draft section 4.1.1, RFC 6749 section 4.1.1): ``response_type=code`` only, PKCE
  required with ``S256`` (RFC 7636 section 4.3; ``plain`` refused, as OAuth 2.1 section 4.1.1 recommends), the
  RFC 8707 ``resource`` parameter must name this server's MCP endpoint when given. The page lists the development
  identities of ``scopes/agents.toml``; submitting it redirects to the client with ``code`` and ``state``.
- Token endpoint (RFC 6749 section 4.1.3, RFC 7636 section 4.6): a code is used once, within 60 seconds, by the
  client and redirect URI it was issued to, with the matching ``code_verifier``. Tokens are the dev issuer's
  RFC 9068 JWTs (:class:`server.auth.dev_issuer.DevIssuer`). Errors follow RFC 6749 section 5.2.
- Dynamic client registration (RFC 7591 section 3): public clients (``token_endpoint_auth_method`` ``none``),
  kept in ``<data_dir>/dev-issuer/clients.json`` so a client that registered once keeps working after a restart.
  A client id that was never registered is accepted only with a loopback redirect URI (RFC 8252 section 7.3).
- Metadata (RFC 8414 section 2, served at ``/.well-known/oauth-authorization-server/dev-issuer`` and as OpenID
  discovery) listing these endpoints.

Codes live in this process's memory: ``make run`` is one process; a code outlives nothing but its 60 seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from scopes.catalog import DEFAULT_AGENTS, DEFAULT_CATALOG, AgentBook, CatalogError, load_agents, load_catalog
from server.auth.dev_issuer import DevIssuer
from server.config import Settings

logger = logging.getLogger(__name__)

CODE_TTL_SECONDS: Final = 60
TOKEN_TTL: Final = timedelta(hours=1)
CLIENTS_FILE: Final = "clients.json"
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
_PKCE_VERIFIER_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

_templates = Environment(
    loader=PackageLoader("server.auth", "templates"), autoescape=select_autoescape(default=True), auto_reload=False
)


def s256(verifier: str) -> str:
    """The PKCE ``S256`` challenge of a verifier (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    redirect_uris: tuple[str, ...]
    client_name: str | None = None


@dataclass(frozen=True, slots=True)
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    subject: str
    scopes: tuple[str, ...]
    tenant: str | None
    extra_claims: dict[str, Any]
    expires: float


class OAuthError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def is_loopback(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK_HOSTS | {"::1"}


def _valid_redirect_uri(uri: str) -> bool:
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment:
        return False
    return bool(parts.netloc) if parts.scheme in ("http", "https") else True


class DevAuthorizationServer:
    """DEVELOPMENT ONLY: authorization, token and registration endpoints in front of a :class:`DevIssuer`."""

    def __init__(self, settings: Settings, issuer: DevIssuer, agents: AgentBook) -> None:
        self.settings = settings
        self.issuer = issuer
        self.agents = agents
        self._codes: dict[str, _Code] = {}
        self._clients_path = issuer.jwks_path.parent / CLIENTS_FILE
        self._clients: dict[str, Client] = self._load_clients()
        console = Client(settings.console.client_id, (f"{settings.console_url}/callback",), "Mandate console")
        self._clients[console.client_id] = console

    @classmethod
    def for_settings(cls, settings: Settings) -> DevAuthorizationServer:
        issuer = DevIssuer.load_or_create(settings.data_dir, settings.dev_issuer_url)
        catalog = load_catalog(settings.catalog_path or DEFAULT_CATALOG)
        try:
            agents = load_agents(settings.agents_path or DEFAULT_AGENTS, catalog)
        except CatalogError as exc:  # e.g. a scope catalog of its own without a matching agents file
            logger.info("development issuer: no identities to offer on the sign-in page: %s", exc)
            agents = AgentBook(agents={})
        return cls(settings, issuer, agents)

    # --- metadata -------------------------------------------------------------------------------------------------

    def metadata(self, scopes: list[str]) -> dict[str, Any]:
        base = self.settings.dev_issuer_url
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "registration_endpoint": f"{base}/register",
            "jwks_uri": f"{base}/jwks.json",
            "scopes_supported": scopes,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "token_endpoint_auth_methods_supported": ["none"],
            "code_challenge_methods_supported": ["S256"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "mandate_development_only": True,
            "mandate_warning": "DEVELOPMENT ONLY: anyone who can reach this issuer can sign in as anyone.",
        }

    # --- clients ----------------------------------------------------------------------------------------------------

    def _load_clients(self) -> dict[str, Client]:
        try:
            data = json.loads(self._clients_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            logger.warning("development issuer: %s is unreadable; registered clients are forgotten", self._clients_path)
            return {}
        clients: dict[str, Client] = {}
        for item in data if isinstance(data, list) else []:
            if isinstance(item, dict) and isinstance(item.get("client_id"), str):
                uris = tuple(u for u in item.get("redirect_uris", []) if isinstance(u, str))
                clients[item["client_id"]] = Client(item["client_id"], uris, item.get("client_name"))
        return clients

    def _save_clients(self) -> None:
        items = [
            {"client_id": c.client_id, "redirect_uris": list(c.redirect_uris), "client_name": c.client_name}
            for c in self._clients.values()
            if c.client_id != self.settings.console.client_id
        ]
        tmp = self._clients_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(items, indent=2))
        tmp.replace(self._clients_path)

    def register(self, body: Any) -> Client:
        """RFC 7591 section 3.1: a public client for the given redirect URIs."""
        if not isinstance(body, dict):
            raise OAuthError("invalid_client_metadata", "the registration request is a JSON object")
        uris = body.get("redirect_uris")
        if (
            not isinstance(uris, list)
            or not uris
            or not all(isinstance(u, str) and _valid_redirect_uri(u) for u in uris)
        ):
            raise OAuthError("invalid_redirect_uri", "redirect_uris must be a non-empty list of absolute URIs")
        grants = body.get("grant_types", ["authorization_code"])
        if not isinstance(grants, list) or "authorization_code" not in grants:
            raise OAuthError("invalid_client_metadata", "this issuer supports the authorization_code grant only")
        name = body.get("client_name")
        client = Client(f"dev-{secrets.token_urlsafe(12)}", tuple(uris), name if isinstance(name, str) else None)
        self._clients[client.client_id] = client
        self._save_clients()
        return client

    def _check_client(self, client_id: str, redirect_uri: str) -> None:
        """Raise unless ``redirect_uri`` is one the client registered (or a loopback one for an unknown client)."""
        if not client_id:
            raise OAuthError("invalid_request", "client_id is missing")
        if not redirect_uri or not _valid_redirect_uri(redirect_uri):
            raise OAuthError("invalid_request", "redirect_uri is missing or not an absolute URI")
        client = self._clients.get(client_id)
        if client is None:
            if is_loopback(redirect_uri):
                return
            raise OAuthError("invalid_client", f"unknown client {client_id!r} (register it, or use a loopback URI)")
        if redirect_uri not in client.redirect_uris:
            raise OAuthError("invalid_request", "redirect_uri is not one this client registered")

    # --- authorization ----------------------------------------------------------------------------------------------

    def check_request(self, params: dict[str, str]) -> None:
        """Raise for an authorization request that cannot go on; client problems first (shown, never redirected)."""
        self._check_client(params.get("client_id", ""), params.get("redirect_uri", ""))
        if params.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "response_type must be code")
        challenge = params.get("code_challenge", "")
        if not challenge:
            raise OAuthError("invalid_request", "PKCE is required: code_challenge is missing")
        if params.get("code_challenge_method") != "S256":
            raise OAuthError("invalid_request", "code_challenge_method must be S256")
        resource = params.get("resource")
        if resource and resource.rstrip("/") != self.settings.audience.rstrip("/"):
            raise OAuthError("invalid_target", f"this issuer issues tokens for {self.settings.audience} only")

    def issue_code(self, params: dict[str, str], agent_name: str, subject: str, approver: bool) -> str:
        self.check_request(params)
        agent = self.agents.agents.get(agent_name)
        if agent is None:
            raise OAuthError("access_denied", f"unknown development identity {agent_name!r}")
        asked = params.get("scope", "").split()
        scopes = tuple(sorted(set(agent.scopes) & set(asked))) if asked else tuple(sorted(agent.scopes))
        extra: dict[str, Any] = {}
        claim = self.settings.approvals.approver_claim
        if (approver or agent.human) and claim:  # as `mandate token mint`: a development person carries the marker
            extra[claim] = self.settings.approvals.approver_claim_value or True
        code = secrets.token_urlsafe(32)
        self._purge()
        self._codes[hashlib.sha256(code.encode()).hexdigest()] = _Code(
            client_id=params["client_id"],
            redirect_uri=params["redirect_uri"],
            challenge=params["code_challenge"],
            subject=subject.strip() or f"agent:{agent_name}",
            scopes=scopes,
            tenant=agent.tenant,
            extra_claims=extra,
            expires=time.monotonic() + CODE_TTL_SECONDS,
        )
        return code

    def _purge(self) -> None:
        now = time.monotonic()
        for key in [k for k, v in self._codes.items() if v.expires <= now]:
            del self._codes[key]

    # --- token ------------------------------------------------------------------------------------------------------

    def exchange(self, form: dict[str, str]) -> dict[str, Any]:
        if form.get("grant_type") != "authorization_code":
            raise OAuthError("unsupported_grant_type", "only grant_type=authorization_code is supported")
        stored = self._codes.pop(hashlib.sha256(form.get("code", "").encode()).hexdigest(), None)
        if stored is None or stored.expires <= time.monotonic():
            raise OAuthError("invalid_grant", "the code is unknown, used or expired")
        if form.get("client_id") != stored.client_id or form.get("redirect_uri") != stored.redirect_uri:
            raise OAuthError("invalid_grant", "the code was issued to another client or redirect_uri")
        verifier = form.get("code_verifier", "")
        if not 43 <= len(verifier) <= 128 or not set(verifier) <= _PKCE_VERIFIER_CHARS:
            raise OAuthError("invalid_grant", "code_verifier is missing or malformed (RFC 7636 section 4.1)")
        if not hmac.compare_digest(s256(verifier), stored.challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        token = self.issuer.mint(
            subject=stored.subject,
            client_id=stored.client_id,
            scopes=stored.scopes,
            audience=self.settings.audience,
            ttl=TOKEN_TTL,
            tenant=stored.tenant,
            extra_claims=stored.extra_claims or None,
        )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(TOKEN_TTL.total_seconds()),
            "scope": " ".join(stored.scopes),
        }

    # --- HTTP -------------------------------------------------------------------------------------------------------

    def routes(self, scopes: list[str]) -> list[Route]:
        metadata = self.metadata(scopes)

        async def metadata_endpoint(_request: Request) -> JSONResponse:
            return JSONResponse(metadata)

        return [
            Route("/.well-known/oauth-authorization-server/dev-issuer", metadata_endpoint, methods=["GET"]),
            Route("/.well-known/openid-configuration/dev-issuer", metadata_endpoint, methods=["GET"]),
            Route("/dev-issuer/.well-known/openid-configuration", metadata_endpoint, methods=["GET"]),
            Route("/dev-issuer/authorize", self._authorize, methods=["GET", "POST"]),
            Route("/dev-issuer/token", self._token, methods=["POST"]),
            Route("/dev-issuer/register", self._register, methods=["POST"]),
        ]

    async def _authorize(self, request: Request) -> Response:
        if request.method == "GET":
            params = dict(request.query_params)
        else:
            params = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        try:
            self._check_client(params.get("client_id", ""), params.get("redirect_uri", ""))
        except OAuthError as exc:  # never redirect to a URI we cannot trust (RFC 6749 section 4.1.2.1)
            return self._page(request, params, error=exc.description, status=400)
        try:
            self.check_request(params)
            if request.method == "GET":
                return self._page(request, params)
            if params.get("decision") == "deny":
                raise OAuthError("access_denied", "the development user declined")
            code = self.issue_code(
                params, params.get("identity", ""), params.get("subject", ""), params.get("approver") == "on"
            )
        except OAuthError as exc:
            return self._back(params, {"error": exc.error, "error_description": exc.description})
        return self._back(params, {"code": code})

    def _back(self, params: dict[str, str], answer: dict[str, str]) -> RedirectResponse:
        if params.get("state"):
            answer["state"] = params["state"]
        answer["iss"] = self.settings.dev_issuer_url  # RFC 9207
        uri = params["redirect_uri"]
        return RedirectResponse(f"{uri}{'&' if '?' in uri else '?'}{urlencode(answer)}", status_code=303)

    def _page(
        self, request: Request, params: dict[str, str], *, error: str | None = None, status: int = 200
    ) -> Response:
        passed = {
            k: params[k]
            for k in (
                "response_type",
                "client_id",
                "redirect_uri",
                "scope",
                "state",
                "code_challenge",
                "code_challenge_method",
                "resource",
            )
            if k in params
        }
        client = self._clients.get(params.get("client_id", ""))
        html = _templates.get_template("dev_authorize.html").render(
            params=passed,
            error=error,
            client_name=(client.client_name if client else None) or params.get("client_id", "an unregistered client"),
            redirect_host=urlsplit(params.get("redirect_uri", "")).netloc,
            agents=sorted(self.agents.agents.items()),
            asked=params.get("scope", "").split(),
            approver_claim=self.settings.approvals.approver_claim,
            issuer=self.settings.dev_issuer_url,
        )
        return HTMLResponse(
            html,
            status_code=status,
            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"},
        )

    async def _token(self, request: Request) -> JSONResponse:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        try:
            body = self.exchange(form)
        except OAuthError as exc:
            return JSONResponse({"error": exc.error, "error_description": exc.description}, 400, headers=headers)
        return JSONResponse(body, headers=headers)

    async def _register(self, request: Request) -> JSONResponse:
        try:
            client = self.register(json.loads(await request.body() or b"null"))
        except ValueError:
            return JSONResponse({"error": "invalid_client_metadata", "error_description": "not JSON"}, 400)
        except OAuthError as exc:
            return JSONResponse({"error": exc.error, "error_description": exc.description}, 400)
        return JSONResponse(
            {
                "client_id": client.client_id,
                "client_id_issued_at": int(time.time()),
                "redirect_uris": list(client.redirect_uris),
                "client_name": client.client_name,
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
            },
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )


def clients_file(data_dir: Path) -> Path:
    return data_dir / "dev-issuer" / CLIENTS_FILE
