"""The console as an OAuth 2.1 client: authorization code with PKCE (S256) against the configured issuer.

- Endpoints by discovery: RFC 8414 section 3 first, then OpenID Connect Discovery 1.0 section 4, in the order of
  :func:`server.auth.discovery.metadata_urls`; a document is used only when its ``issuer`` is exactly the
  configured one (RFC 8414 section 3.3), and only when it lists ``S256`` in ``code_challenge_methods_supported``
  (the MCP authorization spec, 2025-11-25, "Authorization Code Protection": clients refuse otherwise).
- The request (OAuth 2.1 draft section 4.1.1): ``state`` (bound to the browser's pre-login session),
  ``code_challenge`` S256 of a 256-bit verifier (RFC 7636 section 4.1), and ``resource`` = this server's MCP
  endpoint (RFC 8707 section 2), so the token's audience is this server and the same verifier accepts it.
- The response: RFC 9207 ``iss`` checked when present. The code is exchanged at the token endpoint (RFC 6749
  section 4.1.3) as a public client (``client_id`` in the body) or, with ``console.client_secret`` set, as a
  confidential one (``client_secret_basic``, RFC 6749 section 2.3.1).

No token, code or verifier is ever logged or put in a URL this server serves.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx2

from server.auth._fetch import FetchError, get_json_object, parse_json_object
from server.auth.discovery import metadata_urls
from server.config import Settings


class LoginError(Exception):
    """The login cannot go on; the message is safe to show (no token, no response body)."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str


def pkce_pair() -> tuple[str, str]:
    """A code verifier (43 characters of base64url, 256 bits) and its S256 challenge (RFC 7636 sections 4.1, 4.2)."""
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


class LoginClient:
    def __init__(self, settings: Settings, http_client: httpx2.AsyncClient) -> None:
        self.settings = settings
        self.http = http_client
        self._endpoints: Endpoints | None = None

    @property
    def redirect_uri(self) -> str:
        return f"{self.settings.console_url}/callback"

    async def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            self._endpoints = await self._discover()
        return self._endpoints

    async def _discover(self) -> Endpoints:
        issuer = self.settings.console_issuer
        if issuer is None:
            raise LoginError("no issuer is configured for console logins (console.issuer, or [[issuers]])")
        failures: list[str] = []
        for url in metadata_urls(issuer):
            try:
                metadata = await get_json_object(self.http, url, accept="application/json", timeout_seconds=10)
            except FetchError as exc:
                failures.append(f"{url}: {exc.reason}")
                continue
            if metadata.get("issuer") != issuer:
                failures.append(f"{url}: metadata issuer does not match")
                continue
            authorize, token = metadata.get("authorization_endpoint"), metadata.get("token_endpoint")
            if not isinstance(authorize, str) or not isinstance(token, str):
                failures.append(f"{url}: no authorization_endpoint or token_endpoint")
                continue
            if "S256" not in (metadata.get("code_challenge_methods_supported") or []):
                failures.append(f"{url}: S256 is not in code_challenge_methods_supported")
                continue
            return Endpoints(issuer, authorize, token)
        raise LoginError(f"cannot discover how to log in at {issuer}: " + "; ".join(failures))

    async def authorization_url(self, *, state: str, challenge: str) -> str:
        endpoints = await self.endpoints()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.console.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": " ".join(self.settings.console.scopes),
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "resource": self.settings.audience,
            },
            quote_via=quote,
        )
        sep = "&" if "?" in endpoints.authorization_endpoint else "?"
        return f"{endpoints.authorization_endpoint}{sep}{query}"

    async def exchange(self, *, code: str, verifier: str, iss: str | None) -> str:
        """The access token for an authorization code (never logged)."""
        endpoints = await self.endpoints()
        if iss is not None and iss != endpoints.issuer:  # RFC 9207 section 2.4
            raise LoginError("the authorization response came from another issuer")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
            "client_id": self.settings.console.client_id,
        }
        auth: tuple[str, str] | None = None
        secret = self.settings.console.client_secret
        if secret is not None:
            auth = (quote(self.settings.console.client_id, safe=""), quote(secret.get_secret_value(), safe=""))
        try:
            response = await self.http.post(
                endpoints.token_endpoint,
                data=form,
                auth=auth,  # type: ignore[arg-type]
                headers={"Accept": "application/json"},
                timeout=10,
            )
        except httpx2.HTTPError as exc:
            raise LoginError(f"the token endpoint could not be reached ({type(exc).__name__})") from None
        try:
            body: dict[str, Any] = parse_json_object(response.content)
        except FetchError:
            body = {}
        if response.status_code != 200:
            error = body.get("error") if isinstance(body.get("error"), str) else f"HTTP {response.status_code}"
            raise LoginError(f"the issuer refused the login ({error})")
        token = body.get("access_token")
        if not isinstance(token, str) or str(body.get("token_type", "")).lower() != "bearer":
            raise LoginError("the token endpoint answered without a bearer access token")
        return token
