"""DevIssuer: the development-only local issuer keeps a private key file, publishes only public keys, and mints
tokens that JwtVerifier accepts through a JWKS file and over HTTP."""

from __future__ import annotations

import base64
import json
import stat
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest
from joserfc.jwk import ECKey

from server.auth.dev_issuer import DevIssuer
from server.auth.errors import InvalidToken
from server.auth.jwt_verifier import JwtVerifier, TrustedIssuer

from .support import AUDIENCE, IssuerSite

DEV_ISSUER = "http://127.0.0.1:8765/dev-issuer"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def segment(token: str, index: int) -> dict[str, object]:
    part = token.split(".")[index]
    value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    assert isinstance(value, dict)
    return value


def test_the_key_file_is_private_and_reused_on_the_second_load(tmp_path: Path) -> None:
    first = DevIssuer.load_or_create(tmp_path, DEV_ISSUER)
    key_file = tmp_path / "dev-issuer" / "signing-key.json"

    assert mode(key_file) == 0o600
    assert mode(key_file.parent) == 0o700
    stored = json.loads(key_file.read_text())
    assert "d" in stored

    second = DevIssuer.load_or_create(tmp_path, DEV_ISSUER)

    assert second.kid == first.kid
    assert second.public_jwks() == first.public_jwks()
    assert json.loads(key_file.read_text()) == stored


def test_the_kid_is_the_rfc_7638_thumbprint(tmp_path: Path) -> None:
    issuer = DevIssuer.load_or_create(tmp_path, DEV_ISSUER)
    (published,) = issuer.public_jwks()["keys"]

    assert issuer.kid == ECKey.import_key(published).thumbprint()
    assert published["kid"] == issuer.kid


def test_a_key_file_readable_by_others_is_restricted_again(tmp_path: Path) -> None:
    DevIssuer.load_or_create(tmp_path, DEV_ISSUER)
    key_file = tmp_path / "dev-issuer" / "signing-key.json"
    key_file.chmod(0o644)

    DevIssuer.load_or_create(tmp_path, DEV_ISSUER)

    assert mode(key_file) == 0o600


def test_a_key_file_that_is_not_a_private_p256_key_is_refused(tmp_path: Path) -> None:
    issuer = DevIssuer.load_or_create(tmp_path, DEV_ISSUER)
    key_file = tmp_path / "dev-issuer" / "signing-key.json"
    key_file.write_text(json.dumps(issuer.public_jwks()["keys"][0]))

    with pytest.raises(ValueError, match="private P-256 key"):
        DevIssuer.load_or_create(tmp_path, DEV_ISSUER)

    key_file.write_text("not json")
    with pytest.raises(ValueError, match="does not hold a JWK"):
        DevIssuer.load_or_create(tmp_path, DEV_ISSUER)


def test_the_public_jwks_and_its_file_have_no_private_members(tmp_path: Path) -> None:
    issuer = DevIssuer.load_or_create(tmp_path, DEV_ISSUER)

    path = issuer.write_jwks_file()

    assert path == tmp_path / "dev-issuer" / "jwks.json"
    for jwks in (issuer.public_jwks(), json.loads(path.read_text())):
        (key,) = jwks["keys"]
        assert PRIVATE_MEMBERS.isdisjoint(key)
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")


def test_minted_tokens_carry_the_access_token_header_and_claims(tmp_path: Path) -> None:
    issuer = DevIssuer.load_or_create(tmp_path, DEV_ISSUER)

    token = issuer.mint(
        subject="alice",
        client_id="agent-1",
        scopes=["orders:read", "refunds:write", "orders:read"],
        audience=AUDIENCE,
        ttl=timedelta(minutes=5),
        tenant="acme",
    )
    again = issuer.mint(subject="alice", client_id="agent-1", scopes=[], audience=AUDIENCE)

    assert segment(token, 0) == {"alg": "ES256", "typ": "at+jwt", "kid": issuer.kid}
    claims = segment(token, 1)
    assert {name: claims[name] for name in ("iss", "sub", "aud", "client_id", "scope", "tenant")} == {
        "iss": DEV_ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "client_id": "agent-1",
        "scope": "orders:read refunds:write",
        "tenant": "acme",
    }
    assert isinstance(claims["iat"], int)
    assert claims["exp"] == claims["iat"] + 300
    assert claims["nbf"] == claims["iat"]
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16
    assert segment(again, 1)["jti"] != claims["jti"]


def test_minting_refuses_bad_arguments(tmp_path: Path) -> None:
    issuer = DevIssuer.load_or_create(tmp_path, DEV_ISSUER)

    with pytest.raises(ValueError, match="may not replace"):
        issuer.mint(subject="a", client_id="c", scopes=["s"], audience=AUDIENCE, extra_claims={"exp": 9999999999})
    with pytest.raises(ValueError, match="ttl"):
        issuer.mint(subject="a", client_id="c", scopes=["s"], audience=AUDIENCE, ttl=timedelta(0))
    with pytest.raises(ValueError, match="scope"):
        issuer.mint(subject="a", client_id="c", scopes=["s t"], audience=AUDIENCE)


@pytest.mark.anyio
async def test_dev_tokens_verify_through_a_jwks_file(tmp_path: Path) -> None:
    issuer = DevIssuer.load_or_create(tmp_path, DEV_ISSUER)
    issuer.write_jwks_file()
    token = issuer.mint(
        subject="alice",
        client_id="agent-1",
        scopes=["orders:read"],
        audience=AUDIENCE,
        extra_claims={"act": {"sub": "support-bot"}},
    )

    async with JwtVerifier([issuer.trusted_issuer()], AUDIENCE) as verifier:
        principal = await verifier.verify(token)

    assert (principal.subject, principal.client_id, principal.actor) == ("alice", "agent-1", "support-bot")
    assert principal.scopes == frozenset({"orders:read"})
    assert principal.issuer == DEV_ISSUER


@pytest.mark.anyio
async def test_a_token_from_a_regenerated_dev_key_is_refused(tmp_path: Path) -> None:
    issuer = DevIssuer.load_or_create(tmp_path, DEV_ISSUER)
    issuer.write_jwks_file()
    other = DevIssuer.load_or_create(tmp_path / "elsewhere", DEV_ISSUER)
    token = other.mint(subject="mallory", client_id="agent-1", scopes=["admin"], audience=AUDIENCE)

    async with JwtVerifier([issuer.trusted_issuer()], AUDIENCE) as verifier:
        with pytest.raises(InvalidToken, match="no key matches the token"):
            await verifier.verify(token)


@pytest.mark.anyio
async def test_dev_tokens_verify_over_http(tmp_path: Path, site: IssuerSite, http_client: httpx2.AsyncClient) -> None:
    issuer = DevIssuer.load_or_create(tmp_path, site.issuer)
    site.jwks = issuer.public_jwks()
    token = issuer.mint(subject="alice", client_id="agent-1", scopes=["orders:read"], audience=AUDIENCE)
    trusted = TrustedIssuer(issuer=site.issuer, jwks_uri=site.jwks_uri, algorithms=frozenset({"ES256"}))

    async with JwtVerifier([trusted], AUDIENCE, http_client=http_client) as verifier:
        principal = await verifier.verify(token)

    assert principal.subject == "alice"
    assert site.jwks_hits == 1
