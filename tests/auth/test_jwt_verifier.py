"""JwtVerifier: which access tokens are accepted, which are refused and why, and what the accepted ones say."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc.jwk import Key

from server.auth.errors import InsufficientScope, InvalidToken
from server.auth.jwt_verifier import JwtVerifier, TokenVerifier, TrustedIssuer

from .conftest import VerifierFactory
from .support import (
    AUDIENCE,
    FakeClock,
    IssuerSite,
    TokenFactory,
    b64url,
    ec_key,
    ed25519_key,
    forge,
    rsa_key,
    sign,
    signing_input,
)

pytestmark = pytest.mark.anyio


async def refusal(verifier: JwtVerifier, token: str) -> str:
    """The description of the InvalidToken the verifier raises for ``token``."""
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    assert caught.value.error == "invalid_token"
    assert caught.value.status_code == 401
    return caught.value.description


@pytest.fixture
def published(site: IssuerSite) -> IssuerSite:
    site.publish(rsa_key("k1"))
    return site


async def test_a_valid_token_is_accepted_and_describes_its_caller(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    details = [{"type": "refund", "max_amount": {"value": "50.00", "currency": "EUR"}}]
    claims = tokens.claims(
        tenant="acme", act={"sub": "support-bot"}, authorization_details=details, approver=True, jti="token-7"
    )
    verifier: TokenVerifier = make_verifier()

    principal = await verifier.verify(sign(rsa_key("k1"), claims))

    assert principal.subject == "user-1"
    assert principal.client_id == "agent-1"
    assert principal.scopes == frozenset({"orders:read", "refunds:write"})
    assert principal.issuer == published.issuer
    assert principal.audience == (AUDIENCE,)
    assert principal.expires_at == datetime.fromtimestamp(claims["exp"], tz=UTC)
    assert principal.expires_at.utcoffset() == timedelta(0)
    assert principal.token_id == "token-7"
    assert principal.tenant == "acme"
    assert principal.actor == "support-bot"
    assert principal.authorization_details == tuple(details)
    assert principal.claims["approver"] is True
    assert principal.claims == claims


@pytest.mark.parametrize(
    ("alg", "make_key"),
    [("RS256", rsa_key), ("PS256", rsa_key), ("ES256", ec_key), ("EdDSA", ed25519_key)],
)
async def test_each_default_algorithm_verifies(
    site: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, alg: str, make_key: Callable[[str], Key]
) -> None:
    key = make_key(f"{alg}-key")
    site.publish(key)

    principal = await make_verifier().verify(sign(key, tokens.claims(), alg=alg))

    assert principal.subject == "user-1"


async def test_an_expired_token_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, wall_clock: FakeClock
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(iat=int(wall_clock()) - 3600, nbf=0, exp=int(wall_clock()) - 31))

    assert await refusal(make_verifier(), token) == "token expired"


async def test_expiry_within_the_leeway_is_tolerated_and_beyond_it_is_not(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, wall_clock: FakeClock
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(exp=int(wall_clock()) - 10))

    assert (await make_verifier(leeway_seconds=30).verify(token)).subject == "user-1"
    assert await refusal(make_verifier(leeway_seconds=5), token) == "token expired"


async def test_a_token_without_exp_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(omit=["exp"]))

    assert await refusal(make_verifier(), token) == "token has no expiry"


@pytest.mark.parametrize("exp", [float("inf"), "2999-01-01", True, 10**400])
async def test_an_exp_that_is_not_a_finite_number_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, exp: object
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(exp=exp))

    assert await refusal(make_verifier(), token) == "claim exp is malformed"


async def test_a_token_not_yet_valid_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, wall_clock: FakeClock
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(nbf=int(wall_clock()) + 120))

    assert await refusal(make_verifier(), token) == "token not yet valid"


async def test_a_token_issued_in_the_future_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, wall_clock: FakeClock
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(iat=int(wall_clock()) + 120))

    assert await refusal(make_verifier(), token) == "token issued in the future"


async def test_clock_skew_within_the_leeway_is_tolerated_for_nbf_and_iat(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, wall_clock: FakeClock
) -> None:
    soon = int(wall_clock()) + 20
    token = sign(rsa_key("k1"), tokens.claims(nbf=soon, iat=soon))

    assert (await make_verifier(leeway_seconds=30).verify(token)).subject == "user-1"
    assert await refusal(make_verifier(leeway_seconds=10), token) == "token not yet valid"


async def test_a_token_for_another_audience_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(aud="https://other.example/mcp"))

    assert await refusal(make_verifier(), token) == "audience does not name this server"


async def test_a_token_without_an_audience_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(omit=["aud"]))

    assert await refusal(make_verifier(), token) == "audience does not name this server"


async def test_an_audience_list_that_contains_this_server_is_accepted(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    audiences = ["https://other.example/api", AUDIENCE]
    token = sign(rsa_key("k1"), tokens.claims(aud=audiences))

    principal = await make_verifier().verify(token)

    assert principal.audience == tuple(audiences)


async def test_one_trailing_slash_on_an_audience_is_ignored_and_nothing_else_is(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    verifier = make_verifier(audience=AUDIENCE + "/")

    assert (await verifier.verify(sign(rsa_key("k1"), tokens.claims(aud=AUDIENCE)))).subject == "user-1"
    assert (await verifier.verify(sign(rsa_key("k1"), tokens.claims(aud=AUDIENCE + "/")))).subject == "user-1"
    for other in (AUDIENCE + "//", AUDIENCE + "/tools", AUDIENCE.upper(), "https://mandate.example"):
        token = sign(rsa_key("k1"), tokens.claims(aud=other))
        assert await refusal(verifier, token) == "audience does not name this server", other


async def test_a_token_from_an_untrusted_issuer_is_refused_without_fetching_keys(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(iss="https://evil.example"))

    assert await refusal(make_verifier(), token) == "issuer not trusted"
    assert published.jwks_hits == 0


async def test_an_issuer_that_differs_only_by_a_trailing_slash_is_not_trusted(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(iss=published.issuer + "/"))

    assert await refusal(make_verifier(), token) == "issuer not trusted"


async def test_a_token_without_an_issuer_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(omit=["iss"]))

    assert await refusal(make_verifier(), token) == "issuer not trusted"


async def test_a_token_signed_by_another_trusted_issuers_key_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, tmp_path: Path
) -> None:
    # Two trusted issuers: each iss is checked only against its own key set (RFC 8725 section 3.8).
    other_key = rsa_key("other-k1")
    other_jwks = tmp_path / "other-jwks.json"
    other_jwks.write_text(json.dumps({"keys": [dict(other_key.as_dict(private=False))]}))
    verifier = make_verifier(
        issuers=[
            TrustedIssuer(issuer=published.issuer, jwks_uri=published.jwks_uri),
            TrustedIssuer(issuer="https://other.example", jwks_uri=str(other_jwks)),
        ]
    )
    forged = sign(other_key, tokens.claims(), kid="k1")  # claims iss = the site, signed with the other issuer's key

    assert await refusal(verifier, forged) == "signature does not verify"
    assert (await verifier.verify(sign(other_key, tokens.claims(iss="https://other.example")))).issuer == (
        "https://other.example"
    )


async def test_an_unsigned_alg_none_token_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    for alg, signature in (("none", b""), ("None", b""), ("NONE", b""), ("none", b"junk")):
        token = forge({"alg": alg, "typ": "at+jwt", "kid": "k1"}, tokens.claims(), signature)
        assert await refusal(make_verifier(), token) == "algorithm not allowed"
    assert published.jwks_hits == 0


async def test_an_hs256_token_signed_with_the_public_key_as_hmac_secret_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    # The classic algorithm-confusion forgery: anyone can read the public key, so it must never work as a MAC key.
    public_pem = rsa_key("k1").as_pem(private=False)
    unsigned = forge({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}, tokens.claims())
    mac = hmac.new(public_pem, signing_input(unsigned), hashlib.sha256).digest()
    token = unsigned.rsplit(".", 1)[0] + "." + b64url(mac)

    assert await refusal(make_verifier(), token) == "algorithm not allowed"
    assert await refusal(make_verifier(algorithms=frozenset({"RS256"})), token) == "algorithm not allowed"


def test_an_issuer_cannot_be_configured_to_accept_none_or_hmac() -> None:
    for algorithms in ({"none"}, {"RS256", "HS256"}, {"HS512"}, {"hs384"}):
        with pytest.raises(ValueError, match="never accepted"):
            TrustedIssuer(issuer="https://as.example", algorithms=frozenset(algorithms))
    with pytest.raises(ValueError, match="unknown"):
        TrustedIssuer(issuer="https://as.example", algorithms=frozenset({"RS257"}))


def test_an_issuer_jwks_uri_must_be_an_http_url_or_a_path() -> None:
    for jwks_uri in ("ftp://as.example/jwks", "https:///jwks", ""):
        with pytest.raises(ValueError, match="JWKS"):
            TrustedIssuer(issuer="https://as.example", jwks_uri=jwks_uri)
    assert TrustedIssuer(issuer="https://as.example", jwks_uri="HTTPS://as.example/jwks").jwks_uri
    assert TrustedIssuer(issuer="https://as.example", jwks_uri="/var/lib/mandate/jwks.json").jwks_uri


async def test_an_algorithm_outside_the_issuers_allow_list_is_refused_before_any_key_is_fetched(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(), alg="RS256")

    assert await refusal(make_verifier(algorithms=frozenset({"ES256"})), token) == "algorithm not allowed"
    assert published.jwks_hits == 0


async def test_a_token_whose_alg_does_not_fit_its_key_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    # An RS256 key named by kid, but the header claims ES256: no key of that kid can verify ES256.
    token = sign(ec_key("k1"), tokens.claims(), alg="ES256")

    assert await refusal(make_verifier(), token) == "no key matches the token"


async def test_a_token_typed_jwt_is_refused_by_default(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(), typ="JWT")

    assert (
        await refusal(make_verifier(), token)
        == "token type JWT not accepted; expected typ at+jwt (an RFC 9068 access token)"
    )
    assert published.jwks_hits == 0


async def test_a_token_typed_jwt_is_accepted_when_the_issuer_is_configured_for_it(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    verifier = make_verifier(accepted_types=frozenset({"at+jwt", "jwt"}))

    assert (await verifier.verify(sign(rsa_key("k1"), tokens.claims(), typ="JWT"))).subject == "user-1"


async def test_the_token_type_compares_case_insensitively_with_or_without_the_application_prefix(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    verifier = make_verifier()

    for typ in ("at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"):
        assert (await verifier.verify(sign(rsa_key("k1"), tokens.claims(), typ=typ))).subject == "user-1", typ
    for typ in ("jwt", "id_token+jwt", "application/jwt", "xat+jwt"):
        assert (await refusal(verifier, sign(rsa_key("k1"), tokens.claims(), typ=typ))).startswith(
            f"token type {typ} not accepted; expected typ at+jwt"
        )


async def test_a_token_without_a_type_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(), typ=None)

    assert (
        await refusal(make_verifier(), token)
        == "token has no type (typ); expected typ at+jwt (an RFC 9068 access token)"
    )


async def test_a_tampered_payload_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims())
    header, _, signature = token.split(".")
    escalated = tokens.claims(scope="orders:read refunds:write admin")
    tampered = ".".join([header, b64url(json.dumps(escalated).encode()), signature])

    assert await refusal(make_verifier(), tampered) == "signature does not verify"


async def test_a_token_signed_by_an_unpublished_key_with_a_published_kid_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    impostor = rsa_key("impostor")
    token = sign(impostor, tokens.claims(), kid="k1")

    assert await refusal(make_verifier(), token) == "signature does not verify"


async def test_a_token_without_kid_uses_the_only_key_that_fits_and_is_refused_when_several_do(
    site: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    site.publish(rsa_key("k1"), ec_key("e1"))  # only one RSA key
    token = sign(rsa_key("k1"), tokens.claims(), kid=None)

    assert (await make_verifier().verify(token)).subject == "user-1"

    site.publish(rsa_key("k1"), rsa_key("k2"))
    assert await refusal(make_verifier(), token) == "token has no key id and the issuer has several keys"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "a.b",
        "a.b.c.d",
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln.extra.segments.six",
        "eyJhbGciOiJSUzI1NiJ9..c2ln",
        "bm90IGpzb24.bm90IGpzb24.c2ln",
        "WzFd.WzFd.c2ln",  # JSON arrays, not objects
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln+/=",
        "eyJhbGciOiJSUzI1NiJ9 .eyJpc3MiOiJ4In0.c2ln",
        "ëyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln",
    ],
)
async def test_a_malformed_token_is_refused(make_verifier: VerifierFactory, token: str) -> None:
    assert await refusal(make_verifier(), token) == "token is malformed"


async def test_an_encrypted_token_is_refused(make_verifier: VerifierFactory) -> None:
    assert await refusal(make_verifier(), "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d") == "encrypted tokens are not accepted"


async def test_a_token_longer_than_16_kib_is_refused_before_any_parsing(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(padding="x" * 16 * 1024))

    assert await refusal(make_verifier(), token) == "token too large"
    assert published.jwks_hits == 0


async def test_a_token_with_a_certificate_chain_in_its_header_is_accepted(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    # Some issuers put an x5c chain (kilobytes) in the header; the key still comes from the JWKS, by kid.
    chain = [base64.b64encode(bytes(range(256)) * 6).decode() for _ in range(2)]
    unsigned = forge({"alg": "RS256", "typ": "at+jwt", "kid": "k1", "x5c": chain}, tokens.claims())
    private_key = rsa_key("k1").private_key
    assert private_key is not None
    signature = private_key.sign(signing_input(unsigned), padding.PKCS1v15(), hashes.SHA256())
    token = unsigned.rsplit(".", 1)[0] + "." + b64url(signature)
    assert len(token.split(".")[0]) > 4096

    assert (await make_verifier().verify(token)).subject == "user-1"


async def test_a_token_with_a_critical_header_extension_is_refused(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = forge({"alg": "RS256", "typ": "at+jwt", "kid": "k1", "crit": ["exp"], "exp": 1}, tokens.claims())

    assert await refusal(make_verifier(), token) == "token uses an unsupported critical header"


async def test_a_client_credentials_token_without_sub_takes_the_client_id_as_subject(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(omit=["sub"]))

    principal = await make_verifier().verify(token)

    assert (principal.subject, principal.client_id) == ("agent-1", "agent-1")
    assert await refusal(make_verifier(subject_fallback_to_client_id=False), token) == "token has no subject"


async def test_the_client_id_falls_back_to_azp_and_then_to_sub(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    verifier = make_verifier()

    with_azp = sign(rsa_key("k1"), tokens.claims(omit=["client_id"], azp="web-app"))
    assert (await verifier.verify(with_azp)).client_id == "web-app"
    with_sub_only = sign(rsa_key("k1"), tokens.claims(omit=["client_id"]))
    assert (await verifier.verify(with_sub_only)).client_id == "user-1"


async def test_scopes_are_read_from_scp_when_scope_is_absent(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    verifier = make_verifier()

    as_list = sign(rsa_key("k1"), tokens.claims(omit=["scope"], scp=["orders:read", "customers:read"]))
    assert (await verifier.verify(as_list)).scopes == frozenset({"orders:read", "customers:read"})
    as_string = sign(rsa_key("k1"), tokens.claims(omit=["scope"], scp="orders:read customers:read"))
    assert (await verifier.verify(as_string)).scopes == frozenset({"orders:read", "customers:read"})
    neither = sign(rsa_key("k1"), tokens.claims(omit=["scope"]))
    assert (await verifier.verify(neither)).scopes == frozenset()


@pytest.mark.parametrize(
    "scope",
    [
        "orders:read profile\u00a0refunds:create",
        "orders:read\trefunds:create",
        "orders:read refunds:create\u2028",
        'a"b',
    ],
    ids=["no-break-space", "tab", "line-separator", "quote"],
)
async def test_scopes_are_delimited_by_spaces_only_and_anything_outside_the_grammar_refuses_the_token(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, scope: str
) -> None:
    """RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), separated by %x20."""
    verifier = make_verifier()
    with pytest.raises(InvalidToken, match="scope is malformed"):
        await verifier.verify(sign(rsa_key("k1"), tokens.claims(scope=scope)))
    doubled = await verifier.verify(sign(rsa_key("k1"), tokens.claims(scope="  orders:read   customers:read ")))
    assert doubled.scopes == frozenset({"orders:read", "customers:read"})


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("scope", ["orders:read"]),
        ("sub", 42),
        ("client_id", ""),
        ("jti", 7),
        ("tenant", {"id": "acme"}),
        ("act", "support-bot"),
        ("act", {"iss": "x"}),
        ("aud", [AUDIENCE, 5]),
        ("authorization_details", {"type": "refund"}),
        ("authorization_details", [{"max_amount": 50}]),
        ("authorization_details", [{"type": ""}]),
        ("authorization_details", ["refund"]),
    ],
)
async def test_a_claim_of_the_wrong_shape_refuses_the_token(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, claim: str, value: object
) -> None:
    token = sign(rsa_key("k1"), {**tokens.claims(), claim: value})

    assert await refusal(make_verifier(), token) == f"claim {claim} is malformed"


async def test_the_tenant_is_read_from_the_configured_claim(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    token = sign(rsa_key("k1"), tokens.claims(tenant="acme", org="globex"))

    assert (await make_verifier().verify(token)).tenant == "acme"
    assert (await make_verifier(tenant_claim="org").verify(token)).tenant == "globex"
    assert (await make_verifier(tenant_claim=None).verify(token)).tenant is None


async def test_an_issuer_that_requires_a_tenant_refuses_its_tokens_without_one(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    verifier = make_verifier(require_tenant=True)
    assert (await verifier.verify(sign(rsa_key("k1"), tokens.claims(tenant="acme")))).tenant == "acme"
    assert await refusal(verifier, sign(rsa_key("k1"), tokens.claims())) == "token names no tenant"
    assert (await make_verifier().verify(sign(rsa_key("k1"), tokens.claims()))).tenant is None
    with pytest.raises(ValueError, match="require_tenant needs a tenant_claim"):
        TrustedIssuer(issuer="https://issuer.example", tenant_claim=None, require_tenant=True)


async def test_a_cached_verification_is_rechecked_against_expiry(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, wall_clock: FakeClock
) -> None:
    verifier = make_verifier(leeway_seconds=0)
    token = sign(rsa_key("k1"), tokens.claims(exp=int(wall_clock()) + 60))
    assert (await verifier.verify(token)).subject == "user-1"
    assert (await verifier.verify(token)).subject == "user-1"

    wall_clock.advance(61)

    assert await refusal(verifier, token) == "token expired"


async def test_a_cached_verification_saves_the_key_lookup_for_at_most_five_minutes(
    published: IssuerSite,
    make_verifier: VerifierFactory,
    tokens: TokenFactory,
    wall_clock: FakeClock,
    monotonic_clock: FakeClock,
) -> None:
    verifier = make_verifier(jwks_max_age_seconds=60.0)
    token = sign(rsa_key("k1"), tokens.claims(exp=int(wall_clock()) + 3600))
    await verifier.verify(token)
    published.publish(rsa_key("k2"))  # k1 retired; the verifier only notices when it looks at keys again
    monotonic_clock.advance(120)

    wall_clock.advance(299)
    assert (await verifier.verify(token)).subject == "user-1"
    assert published.jwks_hits == 1

    wall_clock.advance(2)
    assert await refusal(verifier, token) == "no key matches the token"
    assert published.jwks_hits == 2


async def test_a_cached_verification_hands_out_claims_that_callers_cannot_corrupt(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    verifier = make_verifier()
    token = sign(rsa_key("k1"), tokens.claims(authorization_details=[{"type": "refund", "limit": 50}]))
    first = await verifier.verify(token)
    with pytest.raises(TypeError, match="read-only"):
        first.claims["authorization_details"][0]["limit"] = 5000
    with pytest.raises(TypeError, match="read-only"):
        first.authorization_details[0]["limit"] = 5000  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        first.claims["authorization_details"].append({"type": "refund", "limit": 5000})

    second = await verifier.verify(token)

    assert second.authorization_details == ({"type": "refund", "limit": 50},)
    assert second.claims["authorization_details"] == [{"type": "refund", "limit": 50}]


async def test_a_cached_verification_shares_one_principal_without_copying_it(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    verifier = make_verifier()
    token = sign(rsa_key("k1"), tokens.claims(authorization_details=[{"type": "refund", "limit": 50}]))

    first = await verifier.verify(token)
    second = await verifier.verify(token)

    assert second is first
    assert copy.deepcopy(first.claims) is first.claims  # frozen values copy to themselves
    assert json.loads(json.dumps(first.claims))["authorization_details"] == [{"type": "refund", "limit": 50}]


async def test_a_cached_verification_is_refused_within_the_leeway_only_once_expired_past_it(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, wall_clock: FakeClock
) -> None:
    verifier = make_verifier(leeway_seconds=30)
    token = sign(rsa_key("k1"), tokens.claims(exp=int(wall_clock()) + 60))
    assert (await verifier.verify(token)).subject == "user-1"

    wall_clock.advance(75)  # past exp, inside the leeway: still accepted (re-verified, as before the cache)
    assert (await verifier.verify(token)).subject == "user-1"
    wall_clock.advance(20)  # past exp + leeway

    assert await refusal(verifier, token) == "token expired"


async def test_refusal_messages_never_contain_the_token_or_key_material(
    published: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, wall_clock: FakeClock
) -> None:
    key = rsa_key("k1")
    good = sign(key, tokens.claims())
    header, payload, signature = good.split(".")
    bad_tokens = [
        sign(key, tokens.claims(exp=int(wall_clock()) - 3600)),
        sign(key, tokens.claims(aud="https://other.example")),
        sign(key, tokens.claims(iss="https://evil.example")),
        sign(key, tokens.claims(), typ="JWT"),
        sign(key, tokens.claims(scope=7)),
        sign(rsa_key("impostor"), tokens.claims(), kid="k1"),
        sign(rsa_key("unknown"), tokens.claims()),
        f"{header}.{b64url(b'{}')}.{signature}",
        f"{header}.{payload}.{signature[:-4]}AAAA",
        f"{header}.{payload}",
        forge({"alg": "none", "typ": "at+jwt"}, tokens.claims()),
    ]
    public_n = str(key.as_dict(private=False)["n"])

    for token in bad_tokens:
        with pytest.raises(InvalidToken) as caught:
            await make_verifier().verify(token)
        shown = f"{caught.value} {caught.value!r} {caught.value.description} {caught.value.args}"
        for secret in (token, *token.split("."), public_n[:16]):
            if len(secret) >= 8:
                assert secret not in shown, caught.value.description


def test_insufficient_scope_carries_every_needed_scope() -> None:
    error = InsufficientScope(["refunds:write", "orders:read"])

    assert (error.error, error.status_code) == ("insufficient_scope", 403)
    assert error.scopes == ("refunds:write", "orders:read")
    assert "refunds:write" in error.description
    assert "orders:read" in error.description
    assert InsufficientScope(["a"], "no").description == "no"


def test_a_verifier_needs_an_audience_and_distinct_issuers() -> None:
    trusted = TrustedIssuer(issuer="https://as.example", jwks_uri="https://as.example/jwks")
    with pytest.raises(ValueError, match="audience"):
        JwtVerifier([trusted], [])
    with pytest.raises(ValueError, match="twice"):
        JwtVerifier([trusted, trusted], AUDIENCE)
    with pytest.raises(ValueError, match="issuer"):
        JwtVerifier([], AUDIENCE)
