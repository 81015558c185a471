"""Fixtures for the token verification tests: the issuer site over real HTTP (uvicorn on a free 127.0.0.1 port), an
HTTP client, fake clocks and a verifier factory."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn

from server.auth.jwt_verifier import JwtVerifier, TrustedIssuer

from .support import AUDIENCE, FakeClock, IssuerSite, TokenFactory, site_app

VerifierFactory = Callable[..., JwtVerifier]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def wall_clock() -> FakeClock:
    """Seconds since the epoch, for token claims; starts at the real time."""
    return FakeClock(float(int(time.time())))


@pytest.fixture
def monotonic_clock() -> FakeClock:
    """The JWKS cache's clock."""
    return FakeClock(1000.0)


@pytest.fixture
async def site() -> AsyncIterator[IssuerSite]:
    """An issuer site served by uvicorn on a free 127.0.0.1 port for the duration of one test."""
    site = IssuerSite()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    site.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        site_app(site),
        lifespan="off",
        ws="none",
        http="h11",
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    stopped = anyio.Event()

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            sock.close()
            stopped.set()

    async def stop() -> None:
        server.should_exit = True
        with anyio.fail_after(10):
            await stopped.wait()

    site.stop = stop
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
                await anyio.sleep(0.01)
        yield site
        await stop()


@pytest.fixture
async def http_client() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(trust_env=False, timeout=5.0) as client:
        yield client


@pytest.fixture
def tokens(site: IssuerSite, wall_clock: FakeClock) -> TokenFactory:
    return TokenFactory(site, wall_clock)


@pytest.fixture
async def make_verifier(
    site: IssuerSite, http_client: httpx2.AsyncClient, wall_clock: FakeClock, monotonic_clock: FakeClock
) -> AsyncIterator[VerifierFactory]:
    """Build a JwtVerifier trusting the site's issuer through its JWKS URL. Keyword arguments go to TrustedIssuer,
    except ``issuers`` and ``audience`` and the verifier's own options, which go to JwtVerifier."""
    verifiers: list[JwtVerifier] = []
    verifier_option_names = ("leeway_seconds", "jwks_refetch_cooldown_seconds", "jwks_max_age_seconds")

    def make(**options: Any) -> JwtVerifier:
        verifier_options = {name: options.pop(name) for name in verifier_option_names if name in options}
        audience = options.pop("audience", AUDIENCE)
        issuers = options.pop("issuers", None)
        if issuers is None:
            options.setdefault("jwks_uri", site.jwks_uri)
            issuers = [TrustedIssuer(issuer=site.issuer, **options)]
        verifier = JwtVerifier(
            issuers,
            audience,
            http_client=http_client,
            clock=wall_clock,
            monotonic_clock=monotonic_clock,
            **verifier_options,
        )
        verifiers.append(verifier)
        return verifier

    yield make
    for verifier in verifiers:
        await verifier.aclose()
