"""JwksCache: keys fetched once over HTTP (or read from a file), refetched on rotation at most once per cooldown,
refreshed after a max age, and kept through an outage of the issuer's JWKS endpoint."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import anyio
import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import OctKey

from server.auth.errors import InvalidToken
from server.auth.jwks import JwksCache

from .conftest import VerifierFactory
from .support import FakeClock, IssuerSite, TokenFactory, b64url, public_jwks, rsa_key, sign

pytestmark = pytest.mark.anyio


async def test_keys_are_fetched_once_and_reused(
    site: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    site.publish(rsa_key("k1"))
    verifier = make_verifier()

    for _ in range(3):
        await verifier.verify(sign(rsa_key("k1"), tokens.claims()))

    assert site.jwks_hits == 1


async def test_an_unknown_kid_triggers_exactly_one_refetch_within_the_cooldown_and_picks_up_a_rotated_key(
    site: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, monotonic_clock: FakeClock
) -> None:
    site.publish(rsa_key("k1"))
    verifier = make_verifier(jwks_refetch_cooldown_seconds=60.0)
    await verifier.verify(sign(rsa_key("k1"), tokens.claims()))
    assert site.jwks_hits == 1

    site.publish(rsa_key("k1"), rsa_key("k2"))  # the issuer rotates in a new key
    monotonic_clock.advance(1)
    assert (await verifier.verify(sign(rsa_key("k2"), tokens.claims()))).subject == "user-1"
    assert site.jwks_hits == 2

    site.publish(rsa_key("k1"), rsa_key("k2"), rsa_key("k3"))
    monotonic_clock.advance(30)  # still within the cooldown of the last refetch: no new fetch
    for _ in range(5):
        with pytest.raises(InvalidToken, match="no key matches the token"):
            await verifier.verify(sign(rsa_key("k3"), tokens.claims()))
    assert site.jwks_hits == 2

    monotonic_clock.advance(31)  # cooldown over: one refetch finds k3
    assert (await verifier.verify(sign(rsa_key("k3"), tokens.claims()))).subject == "user-1"
    assert site.jwks_hits == 3


async def test_concurrent_lookups_of_a_new_kid_share_one_in_flight_refetch(
    site: IssuerSite, http_client: httpx2.AsyncClient
) -> None:
    # A clock that moves a whole minute on every reading: the cooldown never holds a refetch back, so only the
    # shared in-flight fetch keeps twenty concurrent lookups from making twenty requests.
    ticks = itertools.count(start=0, step=60)
    cache = JwksCache(
        site.jwks_uri,
        http_client=http_client,
        refetch_cooldown_seconds=1.0,
        max_age_seconds=1e9,
        clock=lambda: next(ticks),
    )
    site.publish(rsa_key("k1"))
    await cache.get_key("k1", "RS256")
    site.publish(rsa_key("k1"), rsa_key("k2"))
    site.jwks_delay_seconds = 0.2
    hits_before = site.jwks_hits
    found: list[str | None] = []

    async def look_up() -> None:
        found.append((await cache.get_key("k2", "RS256")).kid)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(look_up)

    assert found == ["k2"] * 20
    assert site.jwks_hits - hits_before == 1


async def test_concurrent_first_verifications_share_one_fetch(
    site: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    site.publish(rsa_key("k1"))
    site.jwks_delay_seconds = 0.2
    verifier = make_verifier()
    token_list = [sign(rsa_key("k1"), tokens.claims()) for _ in range(20)]
    subjects: list[str] = []

    async def verify(token: str) -> None:
        subjects.append((await verifier.verify(token)).subject)

    async with anyio.create_task_group() as tg:
        for token in token_list:
            tg.start_soon(verify, token)

    assert subjects == ["user-1"] * 20
    assert site.jwks_hits == 1


async def test_keys_are_refreshed_after_the_max_age_so_a_retired_key_stops_verifying(
    site: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, monotonic_clock: FakeClock
) -> None:
    site.publish(rsa_key("k1"))
    verifier = make_verifier(jwks_max_age_seconds=600.0)
    await verifier.verify(sign(rsa_key("k1"), tokens.claims()))
    site.publish(rsa_key("k2"))  # k1 retired

    monotonic_clock.advance(599)
    assert (await verifier.verify(sign(rsa_key("k1"), tokens.claims()))).subject == "user-1"
    assert site.jwks_hits == 1

    monotonic_clock.advance(2)
    with pytest.raises(InvalidToken, match="no key matches the token"):
        await verifier.verify(sign(rsa_key("k1"), tokens.claims()))
    assert site.jwks_hits == 2


async def test_a_slow_scheduled_refresh_does_not_hold_up_requests_that_have_cached_keys(
    site: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, monotonic_clock: FakeClock
) -> None:
    site.publish(rsa_key("k1"))
    verifier = make_verifier(jwks_max_age_seconds=600.0)
    await verifier.verify(sign(rsa_key("k1"), tokens.claims()))
    site.jwks_delay_seconds = 1.5
    monotonic_clock.advance(601)
    finished: list[str] = []

    async def verify(name: str) -> None:
        await verifier.verify(sign(rsa_key("k1"), tokens.claims()))
        finished.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(verify, "refresher")
        with anyio.fail_after(5):
            while site.jwks_hits < 2:  # noqa: ASYNC110 - waiting for the refresh request to reach the site
                await anyio.sleep(0.01)
        with anyio.fail_after(1):
            await verify("bystander")

    assert finished == ["bystander", "refresher"]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, None),
        (200, b"<html>maintenance</html>"),
        (200, b'{"keys": []}'),
        (200, b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'),
        (200, b"[]"),
        (302, b""),
    ],
)
async def test_cached_keys_keep_verifying_when_a_refresh_fails(
    site: IssuerSite,
    make_verifier: VerifierFactory,
    tokens: TokenFactory,
    monotonic_clock: FakeClock,
    status: int,
    body: bytes | None,
) -> None:
    site.publish(rsa_key("k1"))
    verifier = make_verifier(jwks_max_age_seconds=600.0, jwks_refetch_cooldown_seconds=60.0)
    await verifier.verify(sign(rsa_key("k1"), tokens.claims()))
    site.jwks_status, site.jwks_body = status, body

    monotonic_clock.advance(700)
    assert (await verifier.verify(sign(rsa_key("k1"), tokens.claims()))).subject == "user-1"
    assert site.jwks_hits == 2  # the refresh was tried, failed, and the cached key was used

    monotonic_clock.advance(10)  # a failed refresh is not retried before the cooldown
    assert (await verifier.verify(sign(rsa_key("k1"), tokens.claims()))).subject == "user-1"
    assert site.jwks_hits == 2


async def test_cached_keys_keep_verifying_when_the_jwks_endpoint_is_down(
    site: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, monotonic_clock: FakeClock
) -> None:
    site.publish(rsa_key("k1"))
    verifier = make_verifier()
    await verifier.verify(sign(rsa_key("k1"), tokens.claims()))

    await site.shut_down()
    monotonic_clock.advance(3600)

    assert (await verifier.verify(sign(rsa_key("k1"), tokens.claims()))).subject == "user-1"


async def test_without_cached_keys_an_unreachable_jwks_endpoint_means_key_set_unavailable(
    site: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory
) -> None:
    site.publish(rsa_key("k1"))
    verifier = make_verifier()
    await site.shut_down()

    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(sign(rsa_key("k1"), tokens.claims()))

    assert caught.value.description == "key set unavailable"


async def test_without_cached_keys_a_failing_jwks_endpoint_means_key_set_unavailable_until_it_recovers(
    site: IssuerSite, make_verifier: VerifierFactory, tokens: TokenFactory, monotonic_clock: FakeClock
) -> None:
    site.publish(rsa_key("k1"))
    site.jwks_status = 500
    verifier = make_verifier()
    token = sign(rsa_key("k1"), tokens.claims())

    with pytest.raises(InvalidToken, match="key set unavailable"):
        await verifier.verify(token)
    with pytest.raises(InvalidToken, match="key set unavailable"):
        await verifier.verify(token)
    assert site.jwks_hits == 1  # the second refusal did not hammer the failing endpoint

    site.jwks_status = 200
    monotonic_clock.advance(6)
    assert (await verifier.verify(token)).subject == "user-1"
    assert site.jwks_hits == 2


async def test_keys_are_read_from_a_local_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(public_jwks([rsa_key("k1")])))

    async with JwksCache(path) as cache:
        key = await cache.get_key("k1", "RS256")

    assert key.kid == "k1"
    assert not key.is_private


async def test_a_missing_local_file_means_key_set_unavailable(tmp_path: Path) -> None:
    async with JwksCache(str(tmp_path / "absent.json")) as cache:
        with pytest.raises(InvalidToken, match="key set unavailable"):
            await cache.keys()


async def test_only_the_public_half_of_a_published_private_key_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [dict(rsa_key("k1").as_dict(private=True))]}))

    async with JwksCache(path) as cache:
        key = await cache.get_key("k1", "RS256")

    assert not key.is_private
    assert "d" not in key.as_dict()


async def test_symmetric_encryption_and_short_rsa_keys_are_never_used_to_verify(tmp_path: Path) -> None:
    short_private = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
    short_numbers = short_private.public_key().public_numbers()
    short = {"kty": "RSA", "kid": "short", "n": b64url(short_numbers.n.to_bytes(128, "big")), "e": "AQAB"}
    members = [
        {**OctKey.generate_key(256).as_dict(private=True), "kid": "shared-secret"},
        {**rsa_key("enc").as_dict(private=False), "kid": "enc", "use": "enc"},
        short,
        {"kty": "RSA", "kid": "broken", "n": "AQAB"},
        {"kty": "PQ-KEM", "kid": "future"},
        {**rsa_key("k1").as_dict(private=False)},
    ]
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": members}))

    async with JwksCache(path) as cache:
        assert [key.kid for key in (await cache.keys()).keys] == ["k1"]
        for kid in ("shared-secret", "enc", "short", "broken", "future"):
            with pytest.raises(InvalidToken, match="no key matches the token"):
                await cache.get_key(kid, "RS256")


def test_the_source_shown_in_logs_carries_no_credentials_or_query() -> None:
    cache = JwksCache("https://client:s3cret@as.example:8443/keys?token=abc#frag")

    assert cache.source == "https://as.example:8443/keys"


def test_a_jwks_source_is_an_http_url_or_a_path() -> None:
    for source in ("ftp://as.example/jwks", "file:///etc/jwks.json", "", "https://"):
        with pytest.raises(ValueError, match="JWKS"):
            JwksCache(source)
    JwksCache("https://as.example/jwks")
    JwksCache("relative/jwks.json")
