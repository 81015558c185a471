"""Discovery of an issuer's jwks_uri from RFC 8414 / OpenID Connect metadata, served over real HTTP."""

from __future__ import annotations

import httpx2
import pytest

from server.auth.discovery import DiscoveryError, discover_jwks_uri, metadata_urls
from server.auth.errors import InvalidToken
from server.auth.jwt_verifier import TrustedIssuer

from .conftest import VerifierFactory
from .support import IssuerSite, TokenFactory, rsa_key, sign

pytestmark = pytest.mark.anyio


def test_metadata_locations_insert_the_well_known_path_before_the_issuer_path() -> None:
    assert metadata_urls("https://as.example/tenant1") == [
        "https://as.example/.well-known/oauth-authorization-server/tenant1",
        "https://as.example/.well-known/openid-configuration/tenant1",
        "https://as.example/tenant1/.well-known/openid-configuration",
    ]
    assert metadata_urls("https://as.example/tenant1/") == metadata_urls("https://as.example/tenant1")
    assert metadata_urls("https://as.example") == [
        "https://as.example/.well-known/oauth-authorization-server",
        "https://as.example/.well-known/openid-configuration",
    ]
    assert metadata_urls("https://as.example/") == metadata_urls("https://as.example")


@pytest.mark.parametrize("issuer", ["as.example", "ftp://as.example", "https://as.example?x=1", "https://as.example#f"])
def test_an_issuer_that_is_not_an_http_url_without_query_or_fragment_cannot_be_discovered(issuer: str) -> None:
    with pytest.raises(DiscoveryError, match="RFC 8414"):
        metadata_urls(issuer)


async def test_rfc_8414_metadata_with_path_insertion_gives_the_jwks_uri(
    site: IssuerSite, http_client: httpx2.AsyncClient
) -> None:
    issuer = site.base_url + "/tenant1"
    site.documents["/.well-known/oauth-authorization-server/tenant1"] = {
        "issuer": issuer,
        "jwks_uri": site.base_url + "/tenant1/keys",
    }

    assert await discover_jwks_uri(issuer, http_client) == site.base_url + "/tenant1/keys"


async def test_openid_configuration_at_the_root_gives_the_jwks_uri(
    site: IssuerSite, http_client: httpx2.AsyncClient
) -> None:
    site.documents["/.well-known/openid-configuration"] = {"issuer": site.issuer, "jwks_uri": site.jwks_uri}

    assert await discover_jwks_uri(site.issuer, http_client) == site.jwks_uri
    assert site.hits["/.well-known/oauth-authorization-server"] == 1  # RFC 8414 location tried first


async def test_openid_configuration_appended_to_the_issuer_path_gives_the_jwks_uri(
    site: IssuerSite, http_client: httpx2.AsyncClient
) -> None:
    issuer = site.base_url + "/realms/acme"
    site.documents["/realms/acme/.well-known/openid-configuration"] = {
        "issuer": issuer,
        "jwks_uri": issuer + "/certs",
    }

    assert await discover_jwks_uri(issuer, http_client) == issuer + "/certs"


async def test_metadata_naming_another_issuer_is_rejected(site: IssuerSite, http_client: httpx2.AsyncClient) -> None:
    site.documents["/.well-known/oauth-authorization-server"] = {
        "issuer": site.issuer + "/",
        "jwks_uri": site.base_url + "/attacker-keys",
    }
    site.documents["/.well-known/openid-configuration"] = {
        "issuer": "https://evil.example",
        "jwks_uri": site.base_url + "/attacker-keys",
    }

    with pytest.raises(DiscoveryError, match="metadata issuer does not match"):
        await discover_jwks_uri(site.issuer, http_client)


async def test_metadata_naming_another_issuer_is_never_used_even_when_a_later_location_matches(
    site: IssuerSite, http_client: httpx2.AsyncClient
) -> None:
    site.documents["/.well-known/oauth-authorization-server"] = {
        "issuer": "https://evil.example",
        "jwks_uri": site.base_url + "/attacker-keys",
    }
    site.documents["/.well-known/openid-configuration"] = {"issuer": site.issuer, "jwks_uri": site.jwks_uri}

    assert await discover_jwks_uri(site.issuer, http_client) == site.jwks_uri


async def test_no_metadata_anywhere_is_a_discovery_error(site: IssuerSite, http_client: httpx2.AsyncClient) -> None:
    with pytest.raises(DiscoveryError, match="HTTP status 404"):
        await discover_jwks_uri(site.issuer, http_client)


async def test_a_jwks_uri_that_is_not_an_absolute_url_is_a_discovery_error(
    site: IssuerSite, http_client: httpx2.AsyncClient
) -> None:
    site.documents["/.well-known/oauth-authorization-server"] = {"issuer": site.issuer, "jwks_uri": "/jwks"}

    with pytest.raises(DiscoveryError, match="not an absolute"):
        await discover_jwks_uri(site.issuer, http_client)


async def test_a_verifier_without_a_jwks_uri_discovers_it_and_verifies(
    site: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    site.publish(rsa_key("k1"))
    site.documents["/.well-known/oauth-authorization-server"] = {"issuer": site.issuer, "jwks_uri": site.jwks_uri}
    verifier = make_verifier(issuers=[TrustedIssuer(issuer=site.issuer)])

    for _ in range(2):
        assert (await verifier.verify(sign(rsa_key("k1"), tokens.claims()))).issuer == site.issuer

    assert site.hits["/.well-known/oauth-authorization-server"] == 1
    assert site.jwks_hits == 1


async def test_a_verifier_whose_issuer_metadata_mismatches_refuses_tokens_as_key_set_unavailable(
    site: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    site.publish(rsa_key("k1"))
    site.documents["/.well-known/openid-configuration"] = {"issuer": "https://evil.example", "jwks_uri": site.jwks_uri}
    verifier = make_verifier(issuers=[TrustedIssuer(issuer=site.issuer)])

    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(sign(rsa_key("k1"), tokens.claims()))

    assert caught.value.description == "key set unavailable"
    assert site.jwks_hits == 0
