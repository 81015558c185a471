"""Token verification per second, in process: a full check (signature with the parsed key cached, then every
claim), for ES256 (the development issuer) and RS256 (a 2048-bit key), and a repeat of a token already verified
(the verifier's result cache: no signature work, every claim checked again)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import RSAKey

from bench.harness import async_rate
from bench.mandate_site import bench_settings, mint_token
from bench.plan import Plan
from bench.results import Component, Results
from server.auth.dev_issuer import DevIssuer
from server.auth.jwt_verifier import JwtVerifier, TrustedIssuer

RS256_ISSUER = "https://rs256.bench.invalid/"


def _rs256(workdir: Path, audience: str) -> tuple[TrustedIssuer, str]:
    key = RSAKey.generate_key(2048, private=True)
    kid = key.thumbprint()
    public = {**key.as_dict(private=False), "kid": kid, "alg": "RS256", "use": "sig"}
    jwks = workdir / "rs256-jwks.json"
    jwks.write_text(json.dumps({"keys": [public]}))
    now = int(time.time())
    claims = {
        "iss": RS256_ISSUER,
        "sub": "agent:bench",
        "aud": audience,
        "client_id": "bench-agent",
        "scope": "bench:spend",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": kid}, claims, key, algorithms=["RS256"])
    return TrustedIssuer(issuer=RS256_ISSUER, jwks_uri=str(jwks), algorithms=frozenset({"RS256"})), token


async def run_tokens(results: Results, plan: Plan, workdir: Path) -> None:
    settings = bench_settings(workdir / "tokens", tools=50)
    dev = DevIssuer.load_or_create(settings.data_dir, settings.dev_issuer_url)
    dev.write_jwks_file()
    es256_token = mint_token(settings)
    rs256_issuer, rs256_token = _rs256(settings.data_dir, settings.audience)
    issuers = [dev.trusted_issuer(), rs256_issuer]
    seconds = plan.component_seconds

    async with JwtVerifier(issuers, settings.audience, cache_max_entries=0) as uncached:
        for label, key, token in (
            ("ES256 (development issuer, P-256)", "token.verify.es256", es256_token),
            ("RS256 (2048-bit key)", "token.verify.rs256", rs256_token),
        ):
            await uncached.verify(token)  # loads and parses the key set once

            async def verify(token: str = token) -> None:
                await uncached.verify(token)

            value = await async_rate(verify, seconds=seconds)
            results.components.append(
                Component(key, f"token verification, {label}, key cached, no result cache", value, "tokens/s")
            )

    async with JwtVerifier(issuers, settings.audience) as cached:

        async def verify_cached() -> None:
            await cached.verify(es256_token)

        value = await async_rate(verify_cached, seconds=seconds)
        results.components.append(
            Component(
                "token.verify.cached",
                "token verification, a token seen before (result cache; claims re-checked)",
                value,
                "tokens/s",
            )
        )
