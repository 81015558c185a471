"""Find an issuer's ``jwks_uri`` from its published metadata, for issuers configured without one.

Tried in the order the MCP authorization specification gives:

1. OAuth 2.0 Authorization Server Metadata, RFC 8414 section 3.1: ``/.well-known/oauth-authorization-server`` inserted
   between the host and the issuer's path (``https://as.example/t1`` ->
   ``https://as.example/.well-known/oauth-authorization-server/t1``);
2. OpenID Connect Discovery 1.0 section 4 with the same path insertion;
3. OpenID Connect Discovery 1.0 section 4 as written: ``/.well-known/openid-configuration`` appended to the issuer.

A document is only used when its ``issuer`` is identical to the configured issuer (RFC 8414 section 3.3, OpenID Connect
Discovery section 4.3); otherwise the next location is tried, and if none matches, discovery fails.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

import httpx2

from server.auth._fetch import FetchError, get_json_object

OAUTH_METADATA_SUFFIX: Final = "/.well-known/oauth-authorization-server"
OIDC_METADATA_SUFFIX: Final = "/.well-known/openid-configuration"


class DiscoveryError(Exception):
    """No usable metadata for the issuer; the message names URLs and reasons, nothing secret."""


def metadata_urls(issuer: str) -> list[str]:
    """The metadata locations for ``issuer``, in the order they are tried."""
    parts = urlsplit(issuer)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise DiscoveryError(f"issuer {issuer!r} is not an http(s) URL without query and fragment (RFC 8414 section 2)")
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if not path:
        return [origin + OAUTH_METADATA_SUFFIX, origin + OIDC_METADATA_SUFFIX]
    return [
        origin + OAUTH_METADATA_SUFFIX + path,
        origin + OIDC_METADATA_SUFFIX + path,
        origin + path + OIDC_METADATA_SUFFIX,
    ]


async def discover_jwks_uri(issuer: str, client: httpx2.AsyncClient, *, timeout_seconds: float = 10.0) -> str:
    """The ``jwks_uri`` from the first metadata document whose ``issuer`` is exactly ``issuer``."""
    failures: list[str] = []
    for url in metadata_urls(issuer):
        try:
            metadata = await get_json_object(client, url, accept="application/json", timeout_seconds=timeout_seconds)
        except FetchError as exc:
            failures.append(f"{url}: {exc.reason}")
            continue
        if metadata.get("issuer") != issuer:
            failures.append(f"{url}: metadata issuer does not match (RFC 8414 section 3.3)")
            continue
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            failures.append(f"{url}: no jwks_uri")
            continue
        _check_jwks_uri(issuer, jwks_uri)
        return jwks_uri
    raise DiscoveryError(f"no usable metadata for issuer {issuer!r}: " + "; ".join(failures))


def _check_jwks_uri(issuer: str, jwks_uri: str) -> None:
    parts = urlsplit(jwks_uri)
    allowed = ("https",) if urlsplit(issuer).scheme == "https" else ("https", "http")
    if parts.scheme not in allowed or not parts.netloc:
        raise DiscoveryError(f"jwks_uri {jwks_uri!r} of issuer {issuer!r} is not an absolute {'/'.join(allowed)} URL")
