"""Verify a JWT access token from a trusted issuer and return who is calling.

This is the resource-server side of the JWT profile for OAuth 2.0 access tokens (RFC 9068 section 4), hardened as
RFC 8725 (JWT best current practices) asks:

* the token is at most 16 KiB and its JOSE header and payload are parsed without being trusted; the unverified ``iss``
  only chooses which configured issuer's key set to look in (RFC 8725 section 3.8: one key set per issuer);
* ``alg`` must be in that issuer's allow-list before any cryptography runs; ``none`` and the HMAC algorithms are never
  accepted (RFC 8725 sections 2.1, 3.1 and 3.2: no algorithm confusion with a public key used as an HMAC secret);
* ``typ`` must be an access token type (RFC 9068 section 2.1, RFC 8725 section 3.11: explicit typing), so an ID token
  or another JWT from the same issuer is not mistaken for an access token;
* the key is chosen by ``kid`` from the issuer's JWKS only, never from ``jku``/``jwk``/``x5u`` header parameters;
* then the claims (``server.auth.claims``): ``iss``, ``aud``, ``exp``, ``nbf``, ``iat``, ``sub``, scopes.

Verified results are kept in a small in-process cache keyed by the SHA-256 of the token, for at most five minutes and
never past ``exp``. The cached ``Principal`` is immutable (a frozen dataclass over deeply frozen claims,
``server.auth.frozen``) and shared by every request that presents the token, without a copy; a cache hit re-checks the
time-dependent claims (``exp``, ``nbf``, ``iat``) with the current time and leeway, and everything else about the
token (issuer, audience, subject, scopes, shapes) was checked when it was verified and cannot have changed since.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol

import anyio
import httpx2
from joserfc import jwt
from joserfc.errors import BadSignatureError, DecodeError, InvalidPayloadError, JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jws import JWSRegistry

from server.auth.claims import check_times, normalize_audience, principal_from_claims
from server.auth.discovery import DiscoveryError, discover_jwks_uri
from server.auth.errors import InvalidToken
from server.auth.frozen import freeze
from server.auth.jwks import JwksCache, check_jwks_source, is_http_url
from server.auth.principal import Principal

logger = logging.getLogger(__name__)

MAX_TOKEN_CHARS: Final = 16 * 1024
DEFAULT_ALGORITHMS: Final = frozenset({"RS256", "PS256", "ES256", "EdDSA"})
ACCESS_TOKEN_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})
RESULT_CACHE_SECONDS: Final = 300.0
RESULT_CACHE_MAX_ENTRIES: Final = 10_000

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def _normalize_type(value: str) -> str:
    """RFC 7515 section 4.1.9: ``typ`` compares case-insensitively and may omit the ``application/`` prefix."""
    return value.lower().removeprefix("application/")


@dataclass(frozen=True)
class TrustedIssuer:
    """One authorization server whose access tokens this server accepts."""

    issuer: str
    """Compared exactly with the token's ``iss``."""
    jwks_uri: str | None = None
    """An http(s) URL or a local file path of the JWK Set; None discovers it from the issuer's metadata."""
    algorithms: frozenset[str] = DEFAULT_ALGORITHMS
    """Signature algorithms accepted from this issuer; ``none`` and HMAC (``HS*``) are refused at construction."""
    accepted_types: frozenset[str] = ACCESS_TOKEN_TYPES
    """Accepted JOSE ``typ`` values; add ``"jwt"`` for issuers (such as oauth2-mock-server) that write ``typ: JWT``.
    A token without ``typ`` is refused."""
    tenant_claim: str | None = "tenant"
    """The claim that names the caller's tenant, if any."""
    require_tenant: bool = False
    """Refuse tokens without the tenant claim (multi-tenant deployments: a token without a tenant sees every one)."""
    subject_fallback_to_client_id: bool = True
    """Use the client id as subject when ``sub`` is absent (client-credentials tokens of many servers omit it)."""
    accept_untyped: bool = False
    """Accept tokens without a ``typ`` header (Okta's access tokens have none); a ``typ`` that is present must still
    be one of ``accepted_types``."""
    client_id_claim: str | None = None
    """The claim naming the client, read before ``client_id`` and ``azp`` (Okta: ``cid``)."""
    scope_claims: tuple[str, ...] | None = None
    """The claims the granted scopes are read from and merged (``scope``, ``scp``, ``roles``, ``permissions``, ...);
    None reads ``scope``, or ``scp`` when there is no ``scope``."""

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("a trusted issuer needs an issuer identifier")
        if self.jwks_uri is not None:
            check_jwks_source(self.jwks_uri)
        object.__setattr__(self, "algorithms", frozenset(self.algorithms))
        object.__setattr__(self, "accepted_types", frozenset(self.accepted_types))
        if not self.algorithms:
            raise ValueError(f"issuer {self.issuer!r}: no signature algorithm allowed")
        if self.require_tenant and not self.tenant_claim:
            raise ValueError(f"issuer {self.issuer!r}: require_tenant needs a tenant_claim")
        for name in self.algorithms:
            model = JWSRegistry.algorithms.get(name)
            if (
                name.lower() == "none"
                or name.upper().startswith("HS")
                or (model is not None and model.key_type == "oct")
            ):
                raise ValueError(f"issuer {self.issuer!r}: algorithm {name!r} is never accepted (RFC 8725 section 3.1)")
            if model is None:
                raise ValueError(f"issuer {self.issuer!r}: unknown signature algorithm {name!r}")
        if not self.accepted_types:
            raise ValueError(f"issuer {self.issuer!r}: no token type accepted")
        if self.scope_claims is not None:
            object.__setattr__(self, "scope_claims", tuple(self.scope_claims))
            if not self.scope_claims or not all(self.scope_claims):
                raise ValueError(f"issuer {self.issuer!r}: scope_claims names no claim")

    def accepts_type(self, typ: str) -> bool:
        return _normalize_type(typ) in {_normalize_type(accepted) for accepted in self.accepted_types}


class TokenVerifier(Protocol):
    """Anything that turns a bearer token into a verified ``Principal``."""

    async def verify(self, token: str) -> Principal:
        """Return the caller, or raise ``InvalidToken``."""
        ...


class _OneAlgorithmRegistry(JWSRegistry):
    """A joserfc registry that allows exactly the algorithm already checked against the issuer's allow-list.

    Unlike the default registry it does not warn on ``EdDSA`` (deprecated in favour of ``Ed25519`` by RFC 9864 but
    still sound): whether to accept it is the operator's choice, made in ``TrustedIssuer.algorithms``.
    """

    # joserfc's default limits (a 512-byte header) refuse real tokens with an ``x5c`` chain or a large RSA signature;
    # the whole token is already capped at MAX_TOKEN_CHARS.
    max_header_length = MAX_TOKEN_CHARS
    max_payload_length = MAX_TOKEN_CHARS
    max_signature_length = MAX_TOKEN_CHARS

    def get_alg(self, name: str) -> JWSAlgModel:
        if self.allowed is None or name not in self.allowed or name not in self.algorithms:
            raise UnsupportedAlgorithmError("algorithm not allowed")
        return self.algorithms[name]


@dataclass(frozen=True, slots=True)
class _CachedResult:
    principal: Principal
    """Immutable and shared: its claims are frozen (``server.auth.frozen``)."""
    valid_until: float


class JwtVerifier:
    """Verifies access tokens signed by any of the configured issuers for any of the configured audiences."""

    def __init__(
        self,
        issuers: Sequence[TrustedIssuer],
        audience: str | Sequence[str],
        *,
        leeway_seconds: int = 30,
        http_client: httpx2.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        monotonic_clock: Callable[[], float] = time.monotonic,
        jwks_refetch_cooldown_seconds: float = 60.0,
        jwks_max_age_seconds: float = 600.0,
        cache_max_entries: int = RESULT_CACHE_MAX_ENTRIES,
    ) -> None:
        """``audience``: this server's resource identifier(s) (RFC 8707). ``clock`` is wall-clock time in seconds
        since the epoch, used for claims; ``monotonic_clock`` times the JWKS cache. ``http_client`` is borrowed;
        without one, the verifier creates one when it first needs it and closes it in ``aclose``."""
        if not issuers:
            raise ValueError("at least one trusted issuer is needed")
        self._issuers: dict[str, TrustedIssuer] = {}
        for trusted in issuers:
            if trusted.issuer in self._issuers:
                raise ValueError(f"issuer {trusted.issuer!r} is configured twice")
            self._issuers[trusted.issuer] = trusted
        audiences = [audience] if isinstance(audience, str) else list(audience)
        if not audiences or not all(audiences):
            raise ValueError("at least one non-empty audience is needed")
        self._audiences = frozenset(normalize_audience(aud) for aud in audiences)
        if leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")
        self._leeway = leeway_seconds
        self._client = http_client
        self._owns_client = False
        self._clock = clock
        self._monotonic_clock = monotonic_clock
        self._jwks_cooldown = jwks_refetch_cooldown_seconds
        self._jwks_max_age = jwks_max_age_seconds
        self._key_sets: dict[str, JwksCache] = {}
        self._discovery_retry_at: dict[str, float] = {}
        self._discovery_lock = anyio.Lock()
        self._results: OrderedDict[bytes, _CachedResult] = OrderedDict()
        self._cache_max_entries = cache_max_entries

    async def verify(self, token: str) -> Principal:
        """The caller named by ``token`` (a compact JWS, without the ``Bearer`` prefix); raises ``InvalidToken``."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("token too large")
        if not token.isascii():
            raise InvalidToken("token is malformed")
        digest = hashlib.sha256(token.encode("ascii")).digest()
        cached = self._results.get(digest)
        if cached is not None:
            now = self._clock()
            if now < cached.valid_until:
                self._results.move_to_end(digest)
                check_times(cached.principal.claims, now=now, leeway_seconds=self._leeway)
                return cached.principal
            del self._results[digest]

        trusted, claims = await self._verify_signature(token)
        principal = self._principal(trusted, freeze(claims))
        self._remember(
            digest,
            _CachedResult(principal, min(principal.expires_at.timestamp(), self._clock() + RESULT_CACHE_SECONDS)),
        )
        return principal

    async def aclose(self) -> None:
        """Close the HTTP client if this verifier created it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
            self._owns_client = False

    async def __aenter__(self) -> JwtVerifier:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _verify_signature(self, token: str) -> tuple[TrustedIssuer, dict[str, Any]]:
        """Check everything up to and including the signature; return the issuer and the signed claims."""
        header, unverified_claims = _peek(token)
        iss = unverified_claims.get("iss")
        trusted = self._issuers.get(iss) if isinstance(iss, str) else None
        if trusted is None:
            raise InvalidToken("issuer not trusted")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in trusted.algorithms or alg == "none" or alg.upper().startswith("HS"):
            raise InvalidToken("algorithm not allowed")
        if "crit" in header:
            raise InvalidToken("token uses an unsupported critical header")
        typ = header.get("typ")
        if not (typ is None and trusted.accept_untyped) and (not isinstance(typ, str) or not trusted.accepts_type(typ)):
            raise _type_refused(trusted, typ)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("token is malformed")

        key_set = await self._key_set(trusted)
        key = await key_set.get_key(kid, alg)
        try:
            decoded = jwt.decode(
                token,
                key,
                algorithms=[alg],
                registry=_OneAlgorithmRegistry(algorithms=[alg], strict_check_header=False),
            )
        except BadSignatureError:
            raise InvalidToken("signature does not verify") from None
        except (DecodeError, InvalidPayloadError):
            raise InvalidToken("token is malformed") from None
        except JoseError:
            raise InvalidToken("signature does not verify") from None
        return trusted, decoded.claims

    def _principal(self, trusted: TrustedIssuer, claims: dict[str, Any]) -> Principal:
        return principal_from_claims(
            claims,
            issuer=trusted.issuer,
            audiences=self._audiences,
            now=self._clock(),
            leeway_seconds=self._leeway,
            tenant_claim=trusted.tenant_claim,
            subject_fallback_to_client_id=trusted.subject_fallback_to_client_id,
            require_tenant=trusted.require_tenant,
            scope_claims=trusted.scope_claims,
            client_id_claim=trusted.client_id_claim,
        )

    def _remember(self, digest: bytes, result: _CachedResult) -> None:
        if self._cache_max_entries <= 0:
            return
        self._results[digest] = result
        self._results.move_to_end(digest)
        while len(self._results) > self._cache_max_entries:
            self._results.popitem(last=False)

    async def _key_set(self, trusted: TrustedIssuer) -> JwksCache:
        key_set = self._key_sets.get(trusted.issuer)
        if key_set is not None:
            return key_set
        async with self._discovery_lock:
            key_set = self._key_sets.get(trusted.issuer)
            if key_set is not None:
                return key_set
            jwks_uri = trusted.jwks_uri
            if jwks_uri is None:
                jwks_uri = await self._discover(trusted.issuer)
            key_set = JwksCache(
                jwks_uri,
                http_client=self._http_client() if is_http_url(jwks_uri) else None,
                refetch_cooldown_seconds=self._jwks_cooldown,
                max_age_seconds=self._jwks_max_age,
                clock=self._monotonic_clock,
            )
            self._key_sets[trusted.issuer] = key_set
            return key_set

    async def _discover(self, issuer: str) -> str:
        if self._monotonic_clock() < self._discovery_retry_at.get(issuer, float("-inf")):
            raise InvalidToken("key set unavailable")
        try:
            return await discover_jwks_uri(issuer, self._http_client())
        except DiscoveryError as exc:
            logger.warning("metadata discovery failed: %s", exc)
            self._discovery_retry_at[issuer] = self._monotonic_clock() + self._jwks_cooldown
            raise InvalidToken("key set unavailable") from None

    def _http_client(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = httpx2.AsyncClient(timeout=10.0)
            self._owns_client = True
        return self._client


_PRINTABLE_TYPE = re.compile(r"[A-Za-z0-9+/._-]{1,40}")


def _type_refused(trusted: TrustedIssuer, typ: object) -> InvalidToken:
    """The refusal of a token whose JOSE ``typ`` this issuer is not configured for, logged with how to fix it.

    RFC 9068 section 2.1 access tokens say ``typ: at+jwt``; several authorization servers write ``JWT`` instead
    (docs/authorization-servers.md). The message names what was expected and the setting that accepts more; the
    seen value is repeated only when it is a short plain token (it ends up in a ``WWW-Authenticate`` header).
    """
    if not isinstance(typ, str):
        seen = "token has no type (typ)"
    elif _PRINTABLE_TYPE.fullmatch(typ):
        seen = f"token type {typ} not accepted"
    else:
        seen = "token type not accepted"
    expected = ", ".join(sorted({_normalize_type(accepted) for accepted in trusted.accepted_types}))
    logger.warning(
        "%s from issuer %s: it accepts typ %s. If this authorization server writes that type into its access "
        'tokens, add it to the issuer\'s accepted_types (e.g. accepted_types = ["at+jwt", "jwt"], or '
        "MANDATE_ACCEPTED_TYPES=at+jwt,jwt); see docs/authorization-servers.md",
        seen,
        trusted.issuer,
        expected,
    )
    return InvalidToken(f"{seen}; expected typ {expected} (an RFC 9068 access token)")


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JOSE header and payload of a compact JWS, decoded but NOT verified: only for choosing what to check."""
    segments = token.split(".")
    if len(segments) == 5:
        raise InvalidToken("encrypted tokens are not accepted")
    header, payload, signature = segments if len(segments) == 3 else ("", "", "")
    if not (_SEGMENT.fullmatch(header) and _SEGMENT.fullmatch(payload) and _SEGMENT.fullmatch(signature or "A")):
        raise InvalidToken("token is malformed")  # an empty signature is left to the algorithm check to refuse
    return _json_segment(header), _json_segment(payload)


def _json_segment(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise InvalidToken("token is malformed") from None
    if not isinstance(value, dict):
        raise InvalidToken("token is malformed")
    return value
