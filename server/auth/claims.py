"""Validate the claims of a signature-checked access token and turn them into a ``Principal``.

Implements the claim checks of the JWT access token profile, RFC 9068 section 4: ``iss`` exact, ``aud`` naming this
server (RFC 8707 resource indicators; an access token MUST be refused when its audience is not us), ``exp`` required
and in the future, ``nbf`` and ``iat`` not in the future (RFC 7519 section 4.1), each with a small clock-skew leeway.
Then the identity: ``sub`` (RFC 9068 section 2.2), ``client_id`` (else ``azp``, else ``sub``), ``scope`` as a
space-separated string (RFC 8693 section 4.2) or ``scp`` as a list or string (or, per issuer, the union of the
claims it is configured to read: Entra ID ``roles``, Auth0 ``permissions``, ...), ``jti``, the RFC 8693 section 4.1
``act`` actor and RFC 9396 ``authorization_details``. A claim of the wrong shape refuses the token instead of being
guessed at.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from server.auth.errors import InvalidToken
from server.auth.principal import Principal


def normalize_audience(value: str) -> str:
    """Audiences compare exactly, except that one trailing slash is ignored (``https://x/mcp/`` is ``https://x/mcp``)."""
    return value.removesuffix("/")


def principal_from_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audiences: Collection[str],
    now: float,
    leeway_seconds: float,
    tenant_claim: str | None,
    subject_fallback_to_client_id: bool,
    require_tenant: bool = False,
    scope_claims: Sequence[str] | None = None,
    client_id_claim: str | None = None,
) -> Principal:
    """Check ``claims`` at time ``now`` (seconds since the epoch); ``audiences`` are already normalized."""
    if claims.get("iss") != issuer:
        raise InvalidToken("issuer not trusted")

    token_audience = _audience(claims)
    if not any(normalize_audience(aud) in audiences for aud in token_audience):
        raise InvalidToken("audience does not name this server")

    exp = check_times(claims, now=now, leeway_seconds=leeway_seconds)
    try:
        expires_at = datetime.fromtimestamp(exp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidToken("claim exp is malformed") from None

    subject = _string(claims, "sub")
    client_id = (
        (_string(claims, client_id_claim) if client_id_claim else None)
        or _string(claims, "client_id")
        or _string(claims, "azp")
        or subject
    )
    if subject is None and subject_fallback_to_client_id:
        subject = client_id
    if subject is None:
        raise InvalidToken("token has no subject")
    assert client_id is not None  # client_id falls back to the subject, which is set
    tenant = _string(claims, tenant_claim) if tenant_claim else None
    if require_tenant and tenant is None:  # a token without it would see every tenant's data
        raise InvalidToken("token names no tenant")

    return Principal(
        subject=subject,
        client_id=client_id,
        scopes=_scopes(claims) if scope_claims is None else _mapped_scopes(claims, scope_claims),
        issuer=issuer,
        audience=token_audience,
        expires_at=expires_at,
        token_id=_string(claims, "jti"),
        tenant=tenant,
        actor=_actor(claims),
        authorization_details=_authorization_details(claims),
        claims=claims,
    )


def check_times(claims: Mapping[str, Any], *, now: float, leeway_seconds: float) -> float:
    """The claims that depend on the time (``exp`` required and not passed, ``nbf`` and ``iat`` not in the future,
    RFC 7519 sections 4.1.4-4.1.6), checked at ``now``; returns ``exp``. A cached result re-runs exactly this."""
    exp = _number(claims, "exp")
    if exp is None:
        raise InvalidToken("token has no expiry")
    if now >= exp + leeway_seconds:
        raise InvalidToken("token expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and nbf > now + leeway_seconds:
        raise InvalidToken("token not yet valid")
    iat = _number(claims, "iat")
    if iat is not None and iat > now + leeway_seconds:
        raise InvalidToken("token issued in the future")
    return exp


def _audience(claims: Mapping[str, Any]) -> tuple[str, ...]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        return tuple(aud)
    if aud is None:
        return ()
    raise InvalidToken("claim aud is malformed")


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate (RFC 7519 section 2): a finite JSON number; booleans, strings, NaN and infinity are refused."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"claim {name} is malformed")
    try:
        number = float(value)
    except OverflowError:
        raise InvalidToken(f"claim {name} is malformed") from None
    if not math.isfinite(number):
        raise InvalidToken(f"claim {name} is malformed")
    return number


def _string(claims: Mapping[str, Any], name: str) -> str | None:
    """A non-empty string claim, or None when absent."""
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"claim {name} is malformed")
    return value


_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
"""RFC 6749 section 3.3: ``scope-token = 1*( %x21 / %x23-5B / %x5D-7E )``, delimited by single spaces (%x20)."""


def _scope_tokens(value: str, claim: str) -> frozenset[str]:
    """Split on the space character only; any other whitespace or character outside the grammar is malformed, so
    ``"profile\u00a0refunds:create"`` can never grant ``refunds:create``."""
    tokens = [token for token in value.split(" ") if token]
    if not all(_SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise InvalidToken(f"claim {claim} is malformed")
    return frozenset(tokens)


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    if "scope" in claims:
        scope = claims["scope"]
        if not isinstance(scope, str):
            raise InvalidToken("claim scope is malformed")
        return _scope_tokens(scope, "scope")
    scp = claims.get("scp")
    if scp is None:
        return frozenset()
    if isinstance(scp, str):
        return _scope_tokens(scp, "scp")
    if isinstance(scp, list) and all(isinstance(item, str) and _SCOPE_TOKEN.fullmatch(item) for item in scp):
        return frozenset(scp)
    raise InvalidToken("claim scp is malformed")


def _mapped_scopes(claims: Mapping[str, Any], names: Sequence[str]) -> frozenset[str]:
    """The union of the configured scope claims: each a space-separated string (``scope``, Entra ``scp``) or a list
    of scope tokens (Entra ``roles``, Auth0 ``permissions``, Okta ``scp``). An absent claim grants nothing; a claim of
    another shape refuses the token."""
    granted: set[str] = set()
    for name in names:
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            granted |= _scope_tokens(value, name)
        elif isinstance(value, list) and all(isinstance(item, str) and _SCOPE_TOKEN.fullmatch(item) for item in value):
            granted.update(value)
        else:
            raise InvalidToken(f"claim {name} is malformed")
    return frozenset(granted)


def _actor(claims: Mapping[str, Any]) -> str | None:
    act = claims.get("act")
    if act is None:
        return None
    actor = act.get("sub") if isinstance(act, dict) else None
    if isinstance(actor, str) and actor:
        return actor
    raise InvalidToken("claim act is malformed")


def _authorization_details(claims: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    details = claims.get("authorization_details")
    if details is None:
        return ()
    if not isinstance(details, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("type"), str) and entry["type"] for entry in details
    ):
        raise InvalidToken("claim authorization_details is malformed")
    return tuple(details)
