"""Per issuer, the granted scopes come from the claims that issuer really writes: ``scope`` (RFC 9068), ``scp``
(Entra ID delegated as a string, Okta as a list), ``roles`` (Entra ID app roles), ``permissions`` (Auth0 RBAC), or
any configured claim; a refused ``typ`` says what was expected and is logged with the fix."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from server.auth.errors import InvalidToken

from .conftest import VerifierFactory
from .support import IssuerSite, TokenFactory, rsa_key, sign

pytestmark = pytest.mark.anyio


@pytest.fixture
def published(site: IssuerSite) -> IssuerSite:
    site.publish(rsa_key("k1"))
    return site


@pytest.mark.parametrize(
    ("scope_claims", "claims", "granted"),
    [
        (("roles",), {"roles": ["refunds:create", "orders:read"]}, {"refunds:create", "orders:read"}),
        (("permissions",), {"permissions": ["orders:read"]}, {"orders:read"}),
        (("scp",), {"scp": "orders:read refunds:create"}, {"orders:read", "refunds:create"}),
        (("scp",), {"scp": ["orders:read"]}, {"orders:read"}),
        (("scp", "roles"), {"scp": "orders:read", "roles": ["refunds:create"]}, {"orders:read", "refunds:create"}),
        (("https://example.com/scopes",), {"https://example.com/scopes": ["orders:read"]}, {"orders:read"}),
        (("roles",), {}, set()),
    ],
)
async def test_scopes_are_read_from_the_claims_the_issuer_is_configured_for(
    published: IssuerSite,
    make_verifier: VerifierFactory,
    tokens: TokenFactory,
    scope_claims: tuple[str, ...],
    claims: dict[str, Any],
    granted: set[str],
) -> None:
    verifier = make_verifier(scope_claims=scope_claims)
    # the token's own `scope` claim is ignored once the issuer names other claims
    token = sign(rsa_key("k1"), tokens.claims(scope="audit:read", **claims))

    assert (await verifier.verify(token)).scopes == granted


async def test_without_a_mapping_roles_and_permissions_grant_nothing(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(roles=["refunds:create"], permissions=["refunds:create"]))

    assert (await make_verifier().verify(token)).scopes == {"orders:read", "refunds:write"}


@pytest.mark.parametrize("value", [{"refunds:create": True}, ["refunds:create", 7], "refunds:create\u00a0x", 1])
async def test_a_mapped_claim_of_another_shape_refuses_the_token(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, value: object
) -> None:
    verifier = make_verifier(scope_claims=("roles",))
    with pytest.raises(InvalidToken) as refused:
        await verifier.verify(sign(rsa_key("k1"), tokens.claims(roles=value)))
    assert refused.value.description == "claim roles is malformed"


async def test_a_token_typed_jwt_is_refused_saying_what_is_expected_and_the_server_logs_how_to_accept_it(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(), typ="JWT")
    with caplog.at_level(logging.WARNING, logger="server.auth.jwt_verifier"), pytest.raises(InvalidToken) as refused:
        await make_verifier().verify(token)

    assert refused.value.description == "token type JWT not accepted; expected typ at+jwt (an RFC 9068 access token)"
    logged = caplog.text
    assert published.issuer in logged
    assert "accepted_types" in logged and "MANDATE_ACCEPTED_TYPES" in logged
    assert token not in logged


async def test_a_type_with_header_breaking_characters_is_not_repeated_in_the_refusal(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(), typ='x", error="forged')
    with pytest.raises(InvalidToken) as refused:
        await make_verifier().verify(token)
    assert refused.value.description == "token type not accepted; expected typ at+jwt (an RFC 9068 access token)"


async def test_an_issuer_configured_for_untyped_tokens_accepts_one_without_typ_but_still_refuses_a_wrong_typ(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    okta = make_verifier(accept_untyped=True, scope_claims=("scp",), client_id_claim="cid")
    claims = tokens.claims(scp=["orders:read"], cid="0oa-client", omit=["client_id", "scope"])

    principal = await okta.verify(sign(rsa_key("k1"), claims, typ=None))
    assert (principal.client_id, principal.scopes) == ("0oa-client", frozenset({"orders:read"}))
    with pytest.raises(InvalidToken, match="token type JWT not accepted"):
        await okta.verify(sign(rsa_key("k1"), claims, typ="JWT"))
    with pytest.raises(InvalidToken, match="token has no type"):
        await make_verifier().verify(sign(rsa_key("k1"), claims, typ=None))
