"""Real parts for the token verification tests: real keys, real signed JWTs, the issuer site served over HTTP by the
``site`` fixture, and fake clocks so time moves without sleeping."""

from __future__ import annotations

import base64
import json
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

AUDIENCE = "https://mandate.example/mcp"

_RSA_KEYS: dict[str, RSAKey] = {}


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class IssuerSite:
    """What the test authorization server serves, changeable while it runs, and a count of requests per path."""

    base_url: str = ""
    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    jwks_status: int = 200
    jwks_body: bytes | None = None
    """When set, served raw at /jwks instead of ``jwks`` (to serve something that is not a key set)."""
    jwks_delay_seconds: float = 0.0
    documents: dict[str, Any] = field(default_factory=dict)
    """Other JSON documents by path, e.g. "/.well-known/openid-configuration"."""
    hits: Counter[str] = field(default_factory=Counter)
    stop: Callable[[], Awaitable[None]] | None = None

    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def jwks_uri(self) -> str:
        return self.base_url + "/jwks"

    @property
    def jwks_hits(self) -> int:
        return self.hits["/jwks"]

    def publish(self, *keys: Key) -> None:
        self.jwks = public_jwks(keys)

    async def shut_down(self) -> None:
        """Stop serving: connections to the port are refused from now on."""
        assert self.stop is not None
        await self.stop()


def site_app(site: IssuerSite) -> Starlette:
    async def serve(request: Request) -> Response:
        path = request.url.path
        site.hits[path] += 1
        if path == "/jwks":
            if site.jwks_delay_seconds:
                await anyio.sleep(site.jwks_delay_seconds)
            if site.jwks_body is not None:
                return Response(site.jwks_body, status_code=site.jwks_status, media_type="application/json")
            return JSONResponse(site.jwks, status_code=site.jwks_status)
        if path in site.documents:
            return JSONResponse(site.documents[path])
        return JSONResponse({"error": "not found"}, status_code=404)

    return Starlette(routes=[Route("/{path:path}", serve)])


def rsa_key(kid: str) -> RSAKey:
    """A 2048-bit RSA private key with this kid (generated once per kid and reused: RSA generation is slow)."""
    if kid not in _RSA_KEYS:
        _RSA_KEYS[kid] = RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)
    return _RSA_KEYS[kid]


def ec_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)


def ed25519_key(kid: str) -> OKPKey:
    return OKPKey.generate_key("Ed25519", parameters={"kid": kid}, private=True)


def public_jwks(keys: Iterable[Key]) -> dict[str, Any]:
    return {"keys": [dict(key.as_dict(private=False)) for key in keys]}


def sign(key: Key, claims: dict[str, Any], *, alg: str = "RS256", typ: str | None = "at+jwt", **header: Any) -> str:
    """A JWT signed by ``key``; the header gets ``alg``, ``typ`` (unless None) and the key's kid unless given."""
    full_header: dict[str, Any] = {"alg": alg, **header}
    if "kid" not in header and key.kid is not None:
        full_header["kid"] = key.kid
    if full_header.get("kid") is None:
        full_header.pop("kid", None)
    if typ is not None:
        full_header["typ"] = typ
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc warns when signing with EdDSA
        return jwt.encode(full_header, claims, key, algorithms=[alg], default_type=None)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS assembled by hand, for tokens no honest library would produce (``alg: none``, forgeries)."""
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()), b64url(signature)])


def signing_input(token: str) -> bytes:
    header, payload, _ = token.split(".")
    return f"{header}.{payload}".encode()


@dataclass
class TokenFactory:
    """Claims of a well-formed access token from the site's issuer, at the wall clock's time."""

    site: IssuerSite
    clock: FakeClock
    serial: int = 0

    def claims(self, *, omit: Iterable[str] = (), **overrides: Any) -> dict[str, Any]:
        self.serial += 1
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.site.issuer,
            "sub": "user-1",
            "aud": AUDIENCE,
            "client_id": "agent-1",
            "scope": "orders:read refunds:write",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": f"jti-{self.serial}",
        }
        claims.update(overrides)
        for name in omit:
            del claims[name]
        return claims
