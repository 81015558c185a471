"""The verification settings a security team sets reach the running verifier: extra audiences, the clock leeway,
the JWKS timings and the per-issuer scope claims, from the config file and from MANDATE_* variables."""

from __future__ import annotations

import time
from pathlib import Path
from unittest import mock

import pytest

from server.app import open_mandate
from server.auth import dev_issuer
from server.auth.errors import InvalidToken
from server.config import ConfigError, Settings, load_settings

pytestmark = pytest.mark.anyio


def _mint(settings: Settings, *, audience: str | None = None, issued_ago: float = 0.0, ttl_seconds: int = 60) -> str:
    from datetime import timedelta

    issuer = dev_issuer.DevIssuer.load_or_create(settings.data_dir, settings.dev_issuer_url)
    clock = mock.Mock(time=mock.Mock(return_value=time.time() - issued_ago))
    with mock.patch.object(dev_issuer, "time", clock):
        return issuer.mint(
            subject="agent:support",
            client_id="support-agent",
            scopes=["orders:read"],
            audience=audience or settings.audience,
            ttl=timedelta(seconds=ttl_seconds),
        )


async def test_a_token_for_a_configured_extra_audience_is_accepted_and_any_other_refused(settings: Settings) -> None:
    settings = settings.model_copy(update={"audiences": ["api://mandate"]})
    mandate = await open_mandate(settings, local_dev_jwks=True)
    try:
        assert (await mandate.verifier.verify(_mint(settings, audience="api://mandate"))).subject == "agent:support"
        assert (await mandate.verifier.verify(_mint(settings))).subject == "agent:support"
        with pytest.raises(InvalidToken, match="audience does not name this server"):
            await mandate.verifier.verify(_mint(settings, audience="api://someone-else"))
    finally:
        await mandate.aclose()


@pytest.mark.parametrize(("leeway", "accepted"), [(30, True), (0, False)])
async def test_the_clock_leeway_is_the_configured_one(settings: Settings, leeway: int, accepted: bool) -> None:
    settings = settings.model_copy(update={"clock_leeway_seconds": leeway})
    token = _mint(settings, issued_ago=70, ttl_seconds=60)  # expired ten seconds ago
    mandate = await open_mandate(settings, local_dev_jwks=True)
    try:
        if accepted:
            assert (await mandate.verifier.verify(token)).subject == "agent:support"
        else:
            with pytest.raises(InvalidToken, match="token expired"):
                await mandate.verifier.verify(token)
    finally:
        await mandate.aclose()


def test_verification_settings_come_from_the_environment() -> None:
    settings = load_settings(
        environ={
            "MANDATE_ISSUER": "https://login.example.com/tenant/v2.0",
            "MANDATE_ACCEPTED_TYPES": "at+jwt,jwt",
            "MANDATE_SCOPE_CLAIMS": "scp, roles",
            "MANDATE_AUDIENCES": "api://mandate, 00000000-0000-0000-0000-000000000001",
            "MANDATE_JWKS_COOLDOWN_SECONDS": "30",
            "MANDATE_JWKS_MAX_AGE_SECONDS": "3600",
            "MANDATE_CLOCK_LEEWAY_SECONDS": "5",
        }
    )
    (issuer,) = settings.issuers
    assert issuer.scope_claims == ["scp", "roles"]
    assert issuer.accepted_types == ["at+jwt", "jwt"]
    assert settings.accepted_audiences == [
        "http://127.0.0.1:8000/mcp",
        "api://mandate",
        "00000000-0000-0000-0000-000000000001",
    ]
    assert (settings.jwks_cooldown_seconds, settings.jwks_max_age_seconds, settings.clock_leeway_seconds) == (
        30,
        3600,
        5,
    )


def test_an_issuer_table_in_the_config_file_maps_its_scope_claims(tmp_path: Path) -> None:
    config = tmp_path / "mandate.toml"
    config.write_text(
        '[[issuers]]\nissuer = "https://tenant.auth0.example/"\nscope_claims = ["permissions"]\n'
        'audiences = ["https://api.example.com"]\n'
    )
    with pytest.raises(ConfigError, match=r"issuers\.0\.audiences"):
        load_settings(environ={"MANDATE_CONFIG": str(config)})  # audiences are the server's, not an issuer's
    config.write_text(
        'audiences = ["https://api.example.com"]\n'
        '[[issuers]]\nissuer = "https://tenant.auth0.example/"\nscope_claims = ["permissions"]\n'
    )
    settings = load_settings(environ={"MANDATE_CONFIG": str(config)})
    assert settings.issuers[0].scope_claims == ["permissions"]
    assert "https://api.example.com" in settings.accepted_audiences
